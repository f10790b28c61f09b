"""A database that stays busy is a 503 with Retry-After (the request changed nothing and may be sent again);
any other unexpected error stays a 500."""

from __future__ import annotations

import sqlite3

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa_exc

from meshvisor.api import errors


def app_raising(exc: Exception) -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/boom")
    def boom() -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)


def test_busy_database_answers_are_503_with_retry_after() -> None:
    locked = sa_exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    for exc in (sa_exc.TimeoutError("QueuePool limit of size 10 overflow 40 reached"), locked):
        response = app_raising(exc).get("/boom")
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "busy"


def test_other_failures_stay_500() -> None:
    missing = sa_exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: t"))
    for exc in (missing, RuntimeError("bug")):
        response = app_raising(exc).get("/boom")
        assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
