"""The REST API (FastAPI): one router per resource; build it with `create_app`."""

from .app import create_app

__all__ = ["create_app"]
