"""The web dashboard: static assets (`static/`), served by the API process at `/` (see api/routers/web.py).

Plain ES modules, no build step and nothing fetched from outside at run time. The page talks to the same REST
API as every other client, with the API token the user logs in with, and follows `/v1/events` for live state.
"""
