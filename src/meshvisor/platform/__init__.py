"""Orchestration: settings, database models and session, operations, events, the reconciler, the Celery app."""
