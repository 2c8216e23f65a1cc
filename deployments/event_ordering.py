"""The causal ordering kai serve's Prefect server uses for its events (the setting
`PREFECT_SERVER_EVENTS_CAUSAL_ORDERING=deployments.event_ordering`): Prefect's in-memory one,
minus two ways it parks an event for 15 minutes waiting for a leader that will never come.

Why: Prefect's triggers service (prefect/server/events/triggers.py, reactive_evaluation) runs
every event through the causal ordering before any automation sees it. A flow run's state-change
event `follows` the event of the run's previous state when that state is under 5 minutes old
(prefect/server/models/events.py, _timing_is_tight); if the ordering has not seen that leader it
parks the event — and every later state event of the run, each following the one before — for
PRECEDING_EVENT_LOOKBACK (15 min, prefect/server/events/ordering/__init__.py), then evaluates it
late. kai's alert on a Failed health run then arrives 15 minutes late, or never if the server
restarts meanwhile. Two leaders never come (Prefect 3.9.1):

1. The Scheduled state of a run the scheduler made: models/deployments.py,
   _insert_scheduled_flow_runs, inserts runs and their Scheduled states with no event at all. So
   every scheduled run that starts within 5 minutes of being scheduled is parked: the first runs
   after `kai schedule add`, and after every kai serve restart all runs of the next 5 minutes
   (the runner re-registers each deployment; update_deployment deletes the future auto-scheduled
   runs and the scheduler makes them again).
2. An event the previous server process received: memory.py keeps what it has seen in memory
   only, so after a restart (kai serve's supervisor restarts a dead server; the flow runs go on)
   a run's next state event waits for a leader the new process never sees.

What is kept: an event whose leader this process may still receive waits as in Prefect.
"""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from prefect.logging import get_logger
from prefect.server.events.ordering import memory
from prefect.server.events.schemas.events import ReceivedEvent

SETTING = "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING"
MODULE = __name__
# this server process's start, near enough: the triggers service imports this module as it starts
STARTED_AT = dt.datetime.now(dt.timezone.utc)
logger = get_logger(__name__)


def follows_an_unannounced_scheduled_state(event: ReceivedEvent) -> bool:
    """A flow run's state event whose previous state is the Scheduled state the scheduler made
    (named "Scheduled"; AwaitingRetry and Late are Scheduled-type states that do get an event)."""
    if not event.event.startswith("prefect.flow-run."):
        return False
    initial = (event.payload or {}).get("initial_state") or {}
    return initial.get("type") == "SCHEDULED" and initial.get("name") == "Scheduled"


async def received_before_this_process(event_id: UUID) -> bool:
    """The event is in the events table, received before this server process started: the
    previous process had it, and this one never will."""
    import sqlalchemy as sa

    from prefect.server.database import provide_database_interface

    db = provide_database_interface()
    try:
        async with db.session_context() as session:
            received = (await session.execute(
                sa.select(db.Event.received).where(db.Event.id == event_id))).scalar_one_or_none()
    except Exception:  # noqa: BLE001 - e.g. SQLite busy: then wait for the leader as Prefect does
        logger.warning("could not look up event %s; waiting for it as Prefect does", event_id,
                       exc_info=True)
        return False
    if received is None:
        return False
    if received.tzinfo is None:  # a naive time from the database is UTC
        received = received.replace(tzinfo=dt.timezone.utc)
    return received < STARTED_AT


class CausalOrdering(memory.CausalOrdering):
    # memory.CausalOrdering keeps one instance per scope in class attributes: ours, not its
    _instances: dict[str, memory.CausalOrdering] = {}
    _locks: dict = {}

    async def wait_for_leader(self, event: ReceivedEvent) -> None:
        if (event.follows and event.follows != event.id
                and not await self.event_has_been_seen(event.follows)
                and not await self.event_has_started_processing(event.follows)):
            if follows_an_unannounced_scheduled_state(event):
                return
            if await received_before_this_process(event.follows):
                return
        await super().wait_for_leader(event)
