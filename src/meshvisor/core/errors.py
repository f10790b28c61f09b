"""The one small error tree every layer raises; the API maps it to HTTP in one place.

MeshvisorError            base; `code` is the machine word the API returns
├── InvalidInput          the request itself is wrong (400/422)
│   └── NotSupported      the driver does not do this (it does not implement the feature's protocol)
├── NotFound              the named object does not exist (404)
├── Conflict              the object exists or is busy (409)
│   └── IllegalState      the action is not allowed in the object's current state (409)
├── PreconditionFailed    If-Match did not match the object's etag (412)
├── TransientError        worth retrying: a daemon is down or busy
└── PermanentError        retrying will not help: the operation fails
"""

from __future__ import annotations


class MeshvisorError(Exception):
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(MeshvisorError):
    code = "invalid_input"


class NotSupported(InvalidInput):
    """What the instance's kind or its driver cannot do (answered 409: a fine request for another one)."""

    code = "not_supported"


class NotFound(MeshvisorError):
    code = "not_found"


class Forbidden(MeshvisorError):
    """The caller's role may not do this."""

    code = "forbidden"


class Conflict(MeshvisorError):
    code = "conflict"


class IllegalState(Conflict):
    code = "illegal_state"


class PreconditionFailed(MeshvisorError):
    code = "precondition_failed"


class TransientError(MeshvisorError):
    code = "transient_error"


class HostUnavailable(TransientError):
    """The host an instance is on cannot answer now (offline, or its endpoint unreachable)."""

    code = "host_unavailable"


class PermanentError(MeshvisorError):
    code = "operation_failed"
