"""Orchestration: what the platform wants (the database) made true on the drivers, one family per resource.

Each family holds its requests (validate against the database, write desired state and an operation in one
transaction; no driver call) and its steps (the operation's work on the drivers, run by a worker). Families use
only those below them (import-linter holds it):

    worker_start  what a worker does as it starts: registers its host, resumes abandoned operations
    vm_events     libvirt lifecycle events followed in the worker
    reconciler    runs operations through the families' steps (`HANDLERS`, by operation kind); the periodic pass
    stacks/       stack files: pure planning (spec ... planner) + plans saved, applied step by step
    instances/    containers and VMs: requests, steps, attachments (NICs, hot-plugged disks)
    mesh/         services, sidecars, the mesh view, the xDS control plane, the CA, telemetry
    volumes/      storage pools and volumes: pools, requests, steps (mounts, disks of instances)
    networks/     networks and IPAM, security groups, and their per-host kernel state
    images/       images: requests and build/import/pull/push steps
    hosts/        the host registry and what one host can give
    state/        database, models, operations (their locks and claims), events, paging, tokens

Shared by all: `settings` (MESHVISOR_* variables), `runtime` (settings + sessions + drivers of one process),
`celery_app` (where tasks go) and its `broker_transport` (Redis, kept alive across a restart of Redis),
`dispatch` (operations handed to the broker, and sent again when it forgot them), `failpoints` (crash tests).
"""
