"""The platform's state: what every family reads and writes.

db                engine, sessions, `transaction`, migrations (alembic)
models            the SQLAlchemy models of every resource
operations        operations and the per-resource lock
operation_kinds   typed resource and action names; per kind its lock, host and failure policy
events            lifecycle and operation events (rows, streamed by the API)
op_signals        ended operations announced on Redis for waiters
paging            etags and cursors shared by every named resource
tokens            API tokens (hashed)
"""
