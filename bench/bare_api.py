"""The baseline of `api_reads`: a bare FastAPI app whose `GET /v1/instances?limit=&cursor=` answers the pages the
platform gave (read from a JSON file: cursor → page), with a bearer token required and nothing else — the cost of
HTTP, routing and JSON alone, on the same server (uvicorn, one process) and the same kind of route (a plain
`def`, run in the thread pool, as the platform's are).

    python bench/bare_api.py PAGES_FILE PORT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Query


def make_app(pages: dict[str, dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/instances")
    def instances(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "a bearer token is needed")
        page = pages.get(cursor or "")
        if page is None or len(page["items"]) > limit:
            raise HTTPException(400, "not a cursor of this list")
        return page

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    stored = json.loads(Path(sys.argv[1]).read_text())
    uvicorn.run(make_app(stored), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
