"""The event-loop write protocol: SQLite calls of the JSON API run on the server's event loop.

On SQLite every call of a process is serialized anyway, by the GIL and by the write lock; handing each
to a worker thread cost more CPU than the call (a GIL handoff around every statement, since sqlite3
releases the GIL in each: BENCHMARKS.md, labeling server). So the JSON API (labeling.app.rest) runs
short SQLite calls on the event loop itself. There nothing may wait: a write that finds the process's
write lock taken (a page event's write, in a worker thread) or SQLite's lock held by another process
raises WouldWait before it has written anything, and the caller runs the whole call again in a worker
thread, where the write waits its turn.

The rule that makes the rerun harmless, enforced here rather than in comments:

  1. a call on the loop makes at most one write transaction, and
  2. every point that can raise WouldWait comes before that write.

`write_turn` counts the call's writes (a second one raises LoopRuleBroken) and `wait_point` marks a
place that may raise WouldWait (reached after the call's write, it raises LoopRuleBroken whether or
not it would have waited this time). Both are no-ops off the loop: worker threads may wait.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

from sqlalchemy.engine import Connection, Engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


class WouldWait(Exception):
    """A write on the event loop would have to wait for a lock: run the call in a worker thread instead."""


class LoopRuleBroken(RuntimeError):
    """Code on the event loop broke the write protocol (a bug: rerunning the call could write twice)."""


@dataclass
class _Call:
    """One call running on the event loop: the writes it has made so far."""
    writes: int = 0


_CALL: ContextVar[_Call | None] = ContextVar("prefloop_event_loop_call", default=None)


@contextmanager
def on_event_loop() -> Iterator[None]:
    """Mark the code inside as one call running on the event loop: its writes raise WouldWait instead of waiting."""
    token = _CALL.set(_Call())
    try:
        yield
    finally:
        _CALL.reset(token)


def running_on_event_loop() -> bool:
    return _CALL.get() is not None


def wait_point(what: str) -> bool:
    """Mark a place that may raise WouldWait; True when on the event loop (the caller may then raise it).

    Reached after the call has written, it raises LoopRuleBroken: a WouldWait there would rerun a
    call whose write is already stored."""
    call = _CALL.get()
    if call is not None and call.writes:
        raise LoopRuleBroken(f"{what} may raise WouldWait, but this call on the event loop has already written")
    return call is not None


@contextmanager
def write_turn(engine: Engine) -> Iterator[None]:
    """One write transaction in the process's queue of SQLite writers (engine.write_lock).

    On the event loop: a second write of the call raises LoopRuleBroken, a taken lock raises WouldWait,
    and the write counts once it has ended without error (a write that failed stored nothing)."""
    call = _CALL.get()
    if call is not None and call.writes:
        raise LoopRuleBroken("a second write in one call on the event loop")
    lock = getattr(engine, "write_lock", None)
    if lock is not None and not lock.acquire(blocking=call is None):
        raise WouldWait("the process's write lock is taken")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
    if call is not None:
        call.writes += 1


@contextmanager
def no_busy_wait_on_event_loop(conn: Connection) -> Iterator[None]:
    """On the event loop SQLite's busy handler must not sleep (up to SQLITE_BUSY_TIMEOUT_MS while another
    process writes): "database is locked" comes at once instead (labeling.assign.with_retry: WouldWait)."""
    if not running_on_event_loop() or conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.dbapi_connection
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
