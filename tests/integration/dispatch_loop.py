"""A dispatcher for the integration tests: claims due reminders in a tight loop and enqueues them.

Run as `python -m tests.integration.dispatch_loop OUT_FILE` with the worker's environment. It does
what `notifications.dispatch_due_reminders` does (claim, commit, then enqueue a send task with the
ids), but a few rows at a time and without pause, so two of these keep meeting on the same rows.
Every claimed id is appended to OUT_FILE, for the test to check that no id was claimed twice.
It stops when terminated, or by itself after MAX_SECONDS so it can never outlive a test run.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BATCH = 3
MAX_SECONDS = 120.0
READY = "dispatch loop ready"


def main(out_path: Path) -> None:
    # Imported here, not at the top: the test imports READY, and building the Celery app reads
    # the environment, which only this subprocess has.
    import bootstrap
    import worker  # noqa: F401  (the Celery app: the broker comes from BROKER_URL)
    from config import load_settings
    from notifications import outbox, tasks

    sessions = bootstrap.session_factory(load_settings())
    deadline = time.monotonic() + MAX_SECONDS
    print(READY, flush=True)
    with out_path.open("a") as out:
        while time.monotonic() < deadline:
            with sessions() as session:
                ids = outbox.claim_due(session, now=datetime.now(UTC), limit=BATCH)
            if ids:
                tasks.send_reminders.delay(ids)
            if ids:
                out.write("".join(f"{i}\n" for i in ids))
                out.flush()
            else:
                time.sleep(0.002)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
