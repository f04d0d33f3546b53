"""Answering a claimed task: the vote (`submit_judgment`) and the skip, each one transaction that closes the lease.

A lease is the annotator's to answer while it is open (labeling.assign hands it out); once it expired,
was skipped or was answered, an answer gets LeaseLost, except a repeat of the same request, which gets
the judgment already stored.
"""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from sqlalchemy import update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from labeling import hot_sql
from labeling.assign import with_retry
from labeling.connections import read_connection, write_connection, write_statement
from labeling.db import session_scope
from labeling.judgments import check_request_id, earlier_answer, insert_judgment, judgment_values, new_judgment
from labeling.models import Assignment, Judgment, utcnow
from prefloop.errors import InputError

MAX_SKIP_REASON = 512


class LeaseLost(InputError):
    """The assignment is no longer this annotator's to answer (expired, skipped or done)."""


def get_assignment(engine: Engine, assignment_id: int, annotator_id: int) -> Assignment:
    """The assignment, only if it belongs to this annotator (no probing of others' work)."""
    with Session(engine) as session:
        assignment = session.get(Assignment, assignment_id)
        if assignment is None or assignment.annotator_id != annotator_id:
            raise InputError(f"assignment {assignment_id}: not one of yours")
        session.expunge(assignment)
        return assignment


def submit_judgment(engine: Engine, *, assignment_id: int, annotator_id: int, client_request_id: str,
                    choice: str | None = None, ranking: list[int] | None = None, ratings: dict | None = None,
                    rationale: str | None = None, edited_response: str | None = None,
                    ms_spent: int | None = None, now: datetime | None = None) -> Judgment:
    """The one way a vote is saved (browser and API alike): one transaction closes the lease and stores it.

    The shown order comes from the stored assignment, never from the client. A repeated
    `client_request_id` (double click, retried request) returns the judgment already stored.
    What the vote is checked against (the assignment, its task and project, an earlier answer to
    this request) is read and validated before the write transaction: the assignment's fields never
    change after the claim, and the write is what every writer of the process queues for. The write
    stores the judgment only while the lease is open, and closes it (`_vote`): a lease past its expiry
    that nobody reaped yet still counts, since its slot was never given away.
    """
    check_request_id(client_request_id)
    with read_connection(engine) as conn:
        row = _own_assignment(conn, assignment_id, annotator_id, client_request_id)
        prior = None if row.prior_id is None else earlier_answer(conn, client_request_id, row.task_id, annotator_id)
    if prior is not None:
        return prior
    spent = ms_spent if ms_spent is not None else \
        int(((now or utcnow()) - _aware(row.created_at)).total_seconds() * 1000)
    task = SimpleNamespace(id=row.task_id, candidate_ids=row.candidate_ids)
    project = SimpleNamespace(name=row.project_name, mode=row.mode, criteria=row.criteria, is_open=row.is_open)
    judgment = new_judgment(
        task, project, annotator_id=annotator_id, display_order=list(row.display_order),
        client_request_id=client_request_id, choice=choice, ranking=ranking, ratings=ratings,
        rationale=rationale, edited_response=edited_response, ms_spent=max(0, min(spent, 86_400_000 - 1)),
        assignment_id=assignment_id)

    try:
        return with_retry(lambda: _vote(engine, judgment))
    except LeaseLost:
        # A duplicate of this very request (double click, retry) closed the lease first: its answer stands.
        with read_connection(engine) as conn:
            prior = earlier_answer(conn, client_request_id, row.task_id, annotator_id)
        if prior is not None:
            return prior
        raise


def _vote(engine: Engine, judgment: Judgment) -> Judgment:
    """Close the lease and store the judgment, atomically; LeaseLost when the lease is no longer open.

    SQLite: one statement (hot_sql.VOTE; its trigger closes the lease), since inside the process's
    write lock every statement, BEGIN and COMMIT included, waits for the GIL again under load.
    PostgreSQL: the conditional UPDATE first, whose row lock orders the vote against a concurrent
    expiry, skip or duplicate, then the INSERT (the trigger then finds the lease closed).
    """
    if engine.dialect.name == "sqlite":
        with write_statement(engine) as conn:
            judgment.id = conn.execute(hot_sql.VOTE, judgment_values(judgment)).scalar()
            if judgment.id is None:
                raise _lease_lost(conn, judgment.assignment_id)
            return judgment
    with write_connection(engine) as conn:
        if conn.execute(hot_sql.CLOSE_LEASE, {"assignment_id": judgment.assignment_id}).rowcount != 1:
            raise _lease_lost(conn, judgment.assignment_id)
        return insert_judgment(conn, judgment)


def _lease_lost(conn: Connection, assignment_id: int) -> LeaseLost:
    return LeaseLost(f"assignment {assignment_id}: {_status(conn, assignment_id)}; load the next task")


def _own_assignment(conn: Connection, assignment_id: int, annotator_id: int, client_request_id: str):
    """The assignment with its task's and project's fields in one row, only if it is this annotator's;
    `prior_id`: the judgment already stored under `client_request_id`, if any."""
    row = hot_sql.one(conn, hot_sql.OWN_ASSIGNMENT, assignment_id=assignment_id, request_id=client_request_id)
    if row is None or row.annotator_id != annotator_id:
        raise InputError(f"assignment {assignment_id}: not one of yours")
    return row


def _aware(at: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; ours are all UTC."""
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _status(db: Session | Connection, assignment_id: int) -> str:
    status = db.execute(select(Assignment.status).where(Assignment.id == assignment_id)).scalar_one()
    return {"expired": "the lease expired and the task went back to the queue",
            "skipped": "it was skipped", "done": "it is already answered"}.get(status, status)


def skip(engine: Engine, assignment_id: int, annotator_id: int, reason: str) -> Assignment:
    """Give the task back with a reason; it is never served to this annotator again."""
    reason = (reason or "").strip()
    if not reason:
        raise InputError("skip: a reason is required")
    if len(reason) > MAX_SKIP_REASON:
        raise InputError(f"skip reason: {len(reason)} characters, at most {MAX_SKIP_REASON}")

    def run() -> Assignment:
        with session_scope(engine, immediate=True) as session:
            assignment = session.get(Assignment, assignment_id)
            if assignment is None or assignment.annotator_id != annotator_id:
                raise InputError(f"assignment {assignment_id}: not one of yours")
            result = session.execute(update(Assignment).where(
                Assignment.id == assignment_id, Assignment.status == "open",
            ).values(status="skipped", slot=None, skip_reason=reason))
            if result.rowcount != 1:
                raise LeaseLost(f"assignment {assignment_id}: {_status(session, assignment_id)}")
            session.refresh(assignment)
            session.expunge(assignment)
            return assignment

    return with_retry(run)
