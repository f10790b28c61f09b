"""Retention: the periodic pass removes audit entries and events past their days (`state.retention`), keeps the
rest and always the newest event (an event stream resumes after its id); 0 keeps them for ever; a bad setting
is named. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select, update

from meshvisor.platform import reconciler
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import events
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import AuditEntry, Event, utcnow

DAY = timedelta(days=1)


def age(rt: Runtime, model: type[AuditEntry] | type[Event], ids: list[int], at: datetime) -> None:
    column = AuditEntry.at if model is AuditEntry else Event.created_at
    with transaction(rt.sessions) as s:
        s.execute(update(model).where(model.id.in_(ids)).values({column: at}))


def audit_ids(api: TestClient) -> list[int]:
    answer = api.get("/v1/audit", params={"limit": 100})
    assert answer.status_code == 200, answer.text
    return [entry["id"] for entry in answer.json()["items"]]


def event_ids(rt: Runtime) -> list[int]:
    with rt.sessions() as s:
        return list(s.scalars(select(Event.id).order_by(Event.id)))


def emit(rt: Runtime, count: int) -> list[int]:
    with transaction(rt.sessions) as s:
        made = [events.emit(s, "test", "network", f"n{i}") for i in range(count)]
        s.flush()
        return [event.id for event in made]


def with_days(rt: Runtime, audit: int, event: int) -> Runtime:
    rt.settings = rt.settings.model_copy(update={"audit_retention_days": audit, "event_retention_days": event})
    return rt


def test_the_pass_removes_audit_entries_and_events_past_their_days_and_keeps_the_rest(
    api: TestClient, runtime: Runtime
) -> None:
    for name in ("a", "b", "c"):
        assert api.post("/v1/networks", json={"name": name, "cidr": "bad"}).status_code == 400
    old, recent, newest = sorted(audit_ids(api))
    age(runtime, AuditEntry, [old], utcnow() - 31 * DAY)
    age(runtime, AuditEntry, [recent], utcnow() - 29 * DAY)
    stale_events, fresh_events = emit(runtime, 3), emit(runtime, 2)
    age(runtime, Event, stale_events, utcnow() - 8 * DAY)

    passed = reconciler.reconcile(with_days(runtime, audit=30, event=7))

    assert passed["pruned"] == 1 + 3
    assert sorted(audit_ids(api)) == [recent, newest]
    assert event_ids(runtime)[-2:] == fresh_events and not set(stale_events) & set(event_ids(runtime))
    assert reconciler.reconcile(runtime)["pruned"] == 0  # nothing more to remove


def test_the_newest_event_stays_however_old_so_the_next_id_stays_above_it(runtime: Runtime) -> None:
    made = emit(runtime, 3)
    age(runtime, Event, made, utcnow() - 30 * DAY)
    assert reconciler.prune_history(with_days(runtime, audit=1, event=1)) == 2
    assert event_ids(runtime) == made[-1:]
    (after,) = emit(runtime, 1)
    assert after > made[-1]


def test_zero_keeps_them_for_ever(api: TestClient, runtime: Runtime) -> None:
    assert api.post("/v1/networks", json={"name": "a", "cidr": "bad"}).status_code == 400
    (entry,) = audit_ids(api)
    made = emit(runtime, 2)
    age(runtime, AuditEntry, [entry], utcnow() - 4000 * DAY)
    age(runtime, Event, made, utcnow() - 4000 * DAY)
    assert reconciler.prune_history(with_days(runtime, audit=0, event=0)) == 0
    assert audit_ids(api) == [entry] and set(made) <= set(event_ids(runtime))


def test_the_defaults_keep_a_year_of_audit_and_a_week_of_events() -> None:
    settings = Settings()
    assert (settings.audit_retention_days, settings.event_retention_days) == (400, 7)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MESHVISOR_AUDIT_RETENTION_DAYS", "-1"),
        ("MESHVISOR_AUDIT_RETENTION_DAYS", "a year"),
        ("MESHVISOR_EVENT_RETENTION_DAYS", "-7"),
        ("MESHVISOR_EVENT_RETENTION_DAYS", "1.5"),
    ],
)
def test_a_bad_retention_is_named(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("MESHVISOR_").lower()):
        Settings()
