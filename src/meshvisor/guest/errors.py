"""The one error of the guest builder."""

from __future__ import annotations

from meshvisor.core.errors import PermanentError


class TinyImageError(PermanentError):
    """The tiny image could not be built (package download, unexpected package contents, missing module)."""
