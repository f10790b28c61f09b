"""The CLI's client: the typed `meshvisor.client.Client`, its API's URL, token and CA taken from the settings
(the environment, the current remote, or this machine's data directory)."""

from __future__ import annotations

from meshvisor.client import ApiError, Client
from meshvisor.platform.api_tls import client_ssl
from meshvisor.platform.settings import Settings

__all__ = ["ApiClient", "ApiError"]


class ApiClient(Client):
    def __init__(self, settings: Settings, timeout: float = 60.0, project: str | None = None) -> None:
        """`project`: every request acts in it (`?project=`, a platform admin's choice)."""
        super().__init__(
            settings.base_api_url,
            settings.api_token(),
            project=project,
            timeout=timeout,
            verify=client_ssl(settings),
        )
