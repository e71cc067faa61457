"""Liveness stamps of the background processes, one `worker_heartbeats` row each.

Two rows, so that each process can be seen on its own (scheduler.process_hooks):
- `beat`: written by the beat process itself each time it publishes the heartbeat tick. Fresh
  means beat is scheduling and reaches the broker.
- `worker`: written by every worker every DISPATCH_INTERVAL_SECONDS while it is connected to
  the broker, and when it runs beat's heartbeat tick (scheduler.tasks.record_heartbeat). Fresh
  means at least one worker is running, connected and able to write to the database.
A worker that runs but cannot keep up (every pool process busy) shows as reminder lag instead
(scheduler.health).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from scheduler.models import WorkerHeartbeat

BEAT = "beat"
WORKER = "worker"

# Each backend's INSERT ... ON CONFLICT construct (the only two databases we support).
_UPSERT_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def stamp(session: Session, name: str, now: datetime) -> None:
    """Record that process `name` was alive at `now`; flushes, the caller commits."""
    insert = _UPSERT_INSERT[session.get_bind().dialect.name]
    # An upsert, not read-then-insert: two ticks running at once must not collide on the
    # primary key the first time the row is written.
    stmt = insert(WorkerHeartbeat).values(name=name, last_seen_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[WorkerHeartbeat.name], set_={"last_seen_at": stmt.excluded.last_seen_at}
    )
    session.execute(stmt)


def last_seen(session: Session) -> dict[str, datetime]:
    """Every process's last stamp, by name."""
    rows = session.execute(sa.select(WorkerHeartbeat.name, WorkerHeartbeat.last_seen_at))
    return {name: seen for name, seen in rows}
