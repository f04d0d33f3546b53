"""Task assignment: who labels what next, under overlap, leases and gold tasks.

The rules, all enforced inside one database transaction per claim:

1. Leases that ran out go back to the queue (status "expired", slot NULL), swept at most
   every EXPIRE_EVERY_S per process rather than in every claim.
2. An annotator who still holds a live lease in the project gets that one back
   (a page reload or a second tab shows the same task, never a second one).
3. With probability `project.gold_rate` a gold task (known answer) this annotator has
   not seen is served; gold tasks hold no slot, every annotator may see each once.
4. Otherwise the highest-priority task that this annotator has never been assigned
   and that has fewer than `project.overlap` slots taken gets its lowest free slot.

The database is the arbiter, so this holds across several server processes:
`UNIQUE(task_id, slot)` refuses a second holder of a slot and
`UNIQUE(task_id, annotator_id)` a second assignment of a task to one annotator; a
claim that loses such a race is retried. On SQLite the claim runs under
`BEGIN IMMEDIATE` (writers queue up); on PostgreSQL `FOR UPDATE SKIP LOCKED` makes
concurrent claimers pick different tasks instead of colliding.

Answering a claimed task (a vote, a skip) is labeling.answers'.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, TypeVar

from sqlalchemy import String, cast, exists, or_, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlmodel import select

from labeling import hot_sql
from labeling.connections import read_connection, write_connection
from labeling.db import session_scope
from labeling.event_loop import WouldWait, wait_point
from labeling.models import Assignment, Task, utcnow
from prefloop.errors import InputError, NotFoundError

T = TypeVar("T")

CLAIM_ATTEMPTS = 20  # a claim that loses a slot race is retried this often
CANDIDATES_PER_CLAIM = 8  # PostgreSQL: tasks locked per attempt before re-reading the queue
EXPIRE_EVERY_S = 0.5  # lapsed leases are swept at most this often per process (see _expiry_due)
# SQLSTATEs worth retrying on PostgreSQL: serialization failure, deadlock.
_RETRY_SQLSTATES = {"40001", "40P01"}


@dataclass(frozen=True)
class Progress:
    done_today: int  # judgments by this annotator since 00:00 UTC
    done_total: int  # judgments by this annotator in the project
    remaining: int  # tasks still open to this annotator (free slot, never assigned to them)


# ---------------------------------------------------------------------------
# retries


def with_retry(fn: Callable[[], T], attempts: int = CLAIM_ATTEMPTS) -> T:
    """Run `fn` (one whole transaction) again when it lost a race the database reported.

    IntegrityError: a concurrent claim took the same slot or task first.
    OperationalError "database is locked": SQLite refused a stale read-then-write.
    40001/40P01: PostgreSQL serialization failure or deadlock.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except (IntegrityError, OperationalError, DBAPIError) as err:
            if attempt == attempts - 1 or not _is_transient(err):
                raise
            if wait_point("a write that lost a race"):  # no sleeping there: the call reruns in a worker thread
                raise WouldWait(f"a write lost a race ({err.orig})") from err
            time.sleep(random.uniform(0.001, 0.01) * (attempt + 1))  # de-synchronise the racers
    raise AssertionError("unreachable")


def _is_transient(err: DBAPIError) -> bool:
    if isinstance(err, IntegrityError):
        return True
    sqlstate = getattr(err.orig, "sqlstate", None)
    return sqlstate in _RETRY_SQLSTATES or "database is locked" in str(err.orig)


# ---------------------------------------------------------------------------
# claiming work


def next_assignment(engine: Engine, project: str | int, annotator_id: int, *,
                    now: datetime | None = None, rng: random.Random | None = None) -> Assignment | None:
    """The annotator's current lease in `project`, or a newly claimed one; None when no work is left.

    The project's row is read before the write transaction (a project closed while a claim waits
    for the write lock is noticed at the vote), so that inside it only the claim itself runs.
    """
    rng = rng or random.SystemRandom()
    with read_connection(engine) as conn:
        proj = _project_row(conn, project)
    if not proj.is_open:
        raise InputError(f"project {proj.name!r} is closed")

    def claim() -> Assignment | None:
        with write_connection(engine) as conn:
            at = now or utcnow()
            if now is not None or _expiry_due(engine):
                _expire(conn, at)
            if proj.gold_rate > 0 and rng.random() < proj.gold_rate:  # 3. a gold task's turn
                return (_live_lease(conn, proj.id, annotator_id, at)
                        or _claim_gold(conn, proj, annotator_id, at, rng)
                        or _claim_regular(conn, proj, annotator_id, at, rng))
            # The regular claim passes over an annotator with a live lease, which is read only then.
            return _claim_regular(conn, proj, annotator_id, at, rng) or _live_lease(conn, proj.id, annotator_id, at)

    return with_retry(claim)


def _project_row(conn: Connection, project: str | int):
    """The project's row (hot_sql.PROJECT_COLUMNS, attribute access), by name or id."""
    found = hot_sql.one(conn, hot_sql.PROJECT_BY_ID if isinstance(project, int) else hot_sql.PROJECT_BY_NAME,
                        key=project)
    if found is None:
        raise NotFoundError(f"project {project!r} does not exist")
    return found


def _expiry_due(engine: Engine) -> bool:
    """At most one sweep of lapsed leases per EXPIRE_EVERY_S and process, not one per claim.

    Under load the sweep was one more statement in every claim's write transaction, and it finds
    nothing almost always. A lease that lapsed since the last sweep keeps its slot until the next
    one (under a second); it is never served as live (LIVE_LEASE checks the time itself).
    """
    at = time.monotonic()
    last = getattr(engine, "leases_swept_at", None)
    if last is not None and at - last < EXPIRE_EVERY_S:
        return False
    engine.leases_swept_at = at
    return True


def _expire(conn: Connection, at: datetime) -> int:
    """1. Give back the slots of leases that ran out."""
    return conn.execute(hot_sql.EXPIRE, {"at": at}).rowcount


def _live_lease(conn: Connection, project_id: int, annotator_id: int, at: datetime) -> Assignment | None:
    """2. The lease this annotator already holds in the project (resume, never a second task)."""
    row = hot_sql.one(conn, hot_sql.LIVE_LEASE, project_id=project_id, annotator_id=annotator_id, at=at)
    return None if row is None else hot_sql.as_assignment(row)


def _is_gold():
    # A JSON column may hold SQL NULL or the JSON literal null for "no gold answer".
    return ~or_(Task.gold.is_(None), cast(Task.gold, String) == "null")


def _not_seen_by(annotator_id: int):
    return ~exists().where(Assignment.task_id == Task.id, Assignment.annotator_id == annotator_id)


def _claim_gold(conn: Connection, proj, annotator_id: int, at: datetime,
                rng: random.Random) -> Assignment | None:
    """3. A gold task (the caller rolled for it, at rate gold_rate) that this annotator has not been given yet."""
    gold_ids = conn.execute(select(Task.id).where(Task.project_id == proj.id, _is_gold(),
                                                  _not_seen_by(annotator_id))).scalars().all()
    if not gold_ids:
        return None
    task = conn.execute(select(Task.id, Task.candidate_ids).where(Task.id == rng.choice(list(gold_ids)))).one()
    return _lease(conn, proj, task, annotator_id, None, at, rng)


def _claim_regular(conn: Connection, proj, annotator_id: int, at: datetime,
                   rng: random.Random) -> Assignment | None:
    """4. The highest-priority task with a free slot, at its lowest free slot.

    SQLite: the claim runs under the write lock, so the claim statement's own free slot is current
    (one statement finds both). PostgreSQL: the row lock is taken after the statement's snapshot,
    so a claim of the same task committed in between is seen only by a fresh read of its slots,
    and a few candidates are locked in case the first filled up meanwhile.
    """
    locking = conn.dialect.name == "postgresql"
    for task in conn.execute(hot_sql.claim_statement(conn), {
            "project_id": proj.id, "annotator_id": annotator_id, "overlap": proj.overlap, "at": at,
            "n": CANDIDATES_PER_CLAIM if locking else 1}).all():
        slot = _lowest_free_slot(conn, task.id, proj.overlap) if locking else task.free_slot
        if slot is not None:
            return _lease(conn, proj, task, annotator_id, slot, at, rng)
    return None


def _lowest_free_slot(conn: Connection, task_id: int, overlap: int) -> int | None:
    taken = set(conn.execute(hot_sql.SLOTS, {"task_id": task_id}).scalars())
    return next((slot for slot in range(overlap) if slot not in taken), None)


def _lease(conn: Connection, proj, task, annotator_id: int, slot: int | None,
           at: datetime, rng: random.Random) -> Assignment:
    # The shown order is random per assignment and stored, so position bias can be measured.
    order = rng.sample(list(task.candidate_ids), len(task.candidate_ids))
    assignment = Assignment(task_id=task.id, annotator_id=annotator_id, slot=slot, display_order=order,
                            status="open", created_at=at,
                            expires_at=at + timedelta(seconds=proj.lease_seconds))
    values = {k: getattr(assignment, k) for k in ("task_id", "annotator_id", "slot", "display_order", "status",
                                                  "created_at", "expires_at")}
    # A second holder of the slot or of the task fails here (IntegrityError): the claim is retried.
    assignment.id = conn.execute(hot_sql.INSERT_ASSIGNMENT, values).scalar_one()
    return assignment


def expire_leases(engine: Engine, now: datetime | None = None) -> int:
    """Return every lapsed lease's slot to the queue; the number of leases expired."""
    def run() -> int:
        with write_connection(engine) as conn:
            return _expire(conn, now or utcnow())

    return with_retry(run)


# ---------------------------------------------------------------------------
# priorities (active learning) and progress


def set_priorities(engine: Engine, priorities: dict[int, float]) -> int:
    """Set task priorities (higher is served first); the number of tasks updated.

    The hook for active learning: the reward-model side scores open pairs and raises
    the priority of the uncertain ones, without importing anything from the app.
    """
    if not priorities:
        return 0
    for task_id, priority in priorities.items():
        if not isinstance(priority, (int, float)) or priority != priority:  # NaN check
            raise InputError(f"task {task_id}: priority {priority!r} is not a number")

    def run() -> int:
        with session_scope(engine, immediate=True) as session:
            known = set(session.exec(select(Task.id).where(Task.id.in_(list(priorities)))).all())
            missing = sorted(set(priorities) - known)
            if missing:
                raise InputError(f"set_priorities: no such task(s) {missing[:10]}")
            for task_id in sorted(priorities):  # a fixed order: concurrent writers cannot deadlock
                session.execute(update(Task).where(Task.id == task_id).values(priority=float(priorities[task_id])))
            return len(priorities)

    return with_retry(run)


def progress(engine: Engine, project: str | int, annotator_id: int, now: datetime | None = None,
             open_tasks: int | None = None) -> Progress:
    """Today's and all judgments of this annotator in the project, and the tasks still open to them.

    `open_tasks`: the project's `open_task_count`, if the caller keeps a recent one. Counting it
    tests every task of the project, the most expensive query of a page update; with it given,
    only this annotator's own tasks are looked at (remaining = open tasks - those already theirs).
    """
    at = now or utcnow()
    midnight = at.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    by = "id" if isinstance(project, int) else "name"
    with read_connection(engine) as conn:  # one statement when `open_tasks` is given (the app's hot path)
        row = conn.execute(hot_sql.PROGRESS[by], {"key": project, "annotator_id": annotator_id,
                                                  "midnight": midnight}).one()
        if row.project_id is None:
            raise NotFoundError(f"project {project!r} does not exist")
        if open_tasks is None:
            remaining = conn.execute(hot_sql.OPEN_TO_ANNOTATOR, {"project_id": row.project_id, "at": at,
                                     "annotator_id": annotator_id, "overlap": row.overlap}).scalar()
        else:
            remaining = max(0, open_tasks - row.theirs)
    return Progress(done_today=row.done_today or 0, done_total=row.done_total, remaining=remaining)


def open_task_count(engine: Engine, project: str | int, now: datetime | None = None) -> int:
    """Tasks of the project (not gold) with a free slot, whoever may take it."""
    with read_connection(engine) as conn:
        proj = _project_row(conn, project)
        return conn.execute(hot_sql.OPEN_TASKS, {"project_id": proj.id, "at": now or utcnow(),
                                                 "overlap": proj.overlap}).scalar()
