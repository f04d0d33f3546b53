"""Recording judgments: validated, all-or-nothing, and idempotent per client request id.

A browser double-click or a retried API call sends the same `client_request_id`
twice; the second call returns the judgment stored by the first instead of
counting it again. The database's unique constraints are the final arbiter, so
this also holds across several server processes sharing one PostgreSQL database.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from labeling import hot_sql
from labeling.choices import CHOICES
from labeling.db import session_scope
from labeling.models import Assignment, Judgment, Project, Task
from prefloop.errors import InputError

MAX_RATIONALE = 10_000
MAX_EDITED_RESPONSE = 50_000
RATING_RANGE = (1, 5)


def record_judgment(engine: Engine, *, task_id: int, annotator_id: int, display_order: list[int],
                    client_request_id: str, choice: str | None = None, ranking: list[int] | None = None,
                    ratings: dict | None = None, rationale: str | None = None,
                    edited_response: str | None = None, ms_spent: int | None = None) -> Judgment:
    """Store one judgment (or return the one already stored for this request id)."""
    check_request_id(client_request_id)
    try:
        with session_scope(engine) as session:
            existing = _by_request(session.connection(), client_request_id)
            if existing is not None:
                return _same_request(existing, task_id, annotator_id)
            task, project = _task_and_project(session, task_id)
            assignment = session.exec(select(Assignment).where(
                Assignment.task_id == task_id, Assignment.annotator_id == annotator_id)).first()
            if assignment is not None:
                assignment.status = "done"
                session.add(assignment)
            return store_judgment(session, task, project, annotator_id=annotator_id, display_order=display_order,
                                  client_request_id=client_request_id, choice=choice, ranking=ranking,
                                  ratings=ratings, rationale=rationale, edited_response=edited_response,
                                  ms_spent=ms_spent, assignment_id=assignment.id if assignment else None)
    except IntegrityError:
        # A concurrent duplicate won the race; report what it stored.
        with Session(engine) as session:
            existing = _by_request(session.connection(), client_request_id)
            if existing is not None:
                return _same_request(existing, task_id, annotator_id)
        raise InputError(f"task {task_id}: already judged by annotator {annotator_id}") from None


def store_judgment(session: Session, task: Task, project: Project, **fields) -> Judgment:
    """Validate and add one judgment inside the caller's transaction (one INSERT, no re-read)."""
    return insert_judgment(session.connection(), new_judgment(task, project, **fields))


def new_judgment(task: Task, project: Project, *, annotator_id: int, display_order: list[int],
                 client_request_id: str, choice: str | None, ranking: list[int] | None, ratings: dict | None,
                 rationale: str | None, edited_response: str | None, ms_spent: int | None,
                 assignment_id: int | None) -> Judgment:
    """The judgment to store, validated against its task and project (nothing is written)."""
    if not project.is_open:
        raise InputError(f"project {project.name!r} is closed")
    _validate(task, project, display_order, choice, ranking, ratings, rationale, edited_response, ms_spent)
    return Judgment(
        task_id=task.id, annotator_id=annotator_id, display_order=list(display_order), choice=choice,
        ranking=list(ranking) if ranking else None, ratings=ratings, rationale=rationale or None,
        edited_response=edited_response or None, ms_spent=ms_spent, client_request_id=client_request_id,
        assignment_id=assignment_id)


def insert_judgment(conn: Connection, judgment: Judgment) -> Judgment:
    """One INSERT; a duplicate request id or (task, annotator) fails here (IntegrityError)."""
    judgment.id = conn.execute(hot_sql.INSERT_JUDGMENT, judgment_values(judgment)).scalar_one()
    return judgment


def judgment_values(judgment: Judgment) -> dict:
    """The INSERT's parameters: every column but the id."""
    return {c.name: getattr(judgment, c.name) for c in hot_sql.JUDGMENT_VALUES}


def check_request_id(client_request_id: str) -> None:
    if not client_request_id or len(client_request_id) > 64:
        raise InputError("client_request_id: required, at most 64 characters")


def earlier_answer(conn: Connection, client_request_id: str, task_id: int, annotator_id: int) -> Judgment | None:
    """The judgment already stored under this request id (a repeated request), if it is this one's."""
    existing = _by_request(conn, client_request_id)
    return None if existing is None else _same_request(existing, task_id, annotator_id)


def _by_request(conn: Connection, client_request_id: str) -> Judgment | None:
    row = hot_sql.one(conn, hot_sql.JUDGMENT_BY_REQUEST, request_id=client_request_id)
    return None if row is None else hot_sql.as_judgment(row)


def _same_request(existing: Judgment, task_id: int, annotator_id: int) -> Judgment:
    if (existing.task_id, existing.annotator_id) != (task_id, annotator_id):
        raise InputError("client_request_id: already used for a different task or annotator")
    return existing


def _task_and_project(session: Session, task_id: int) -> tuple[Task, Project]:
    task = session.get(Task, task_id)
    if task is None:
        raise InputError(f"task {task_id}: no such task")
    return task, session.get(Project, task.project_id)


def _validate(task, project, display_order, choice, ranking, ratings, rationale, edited_response, ms_spent) -> None:
    if sorted(display_order) != sorted(task.candidate_ids):
        raise InputError(f"task {task.id}: display_order must be a permutation of the task's candidates")
    if project.mode == "pairwise":
        if choice not in CHOICES:
            raise InputError(f"choice: expected one of {', '.join(CHOICES)}, got {choice!r}")
    elif ranking is None or sorted(ranking) != sorted(task.candidate_ids):
        raise InputError(f"task {task.id}: ranking must order all {len(task.candidate_ids)} candidates")
    _validate_ratings(ratings, project.criteria or [], task.candidate_ids)
    if rationale and len(rationale) > MAX_RATIONALE:
        raise InputError(f"rationale: {len(rationale)} characters, at most {MAX_RATIONALE}")
    if edited_response and len(edited_response) > MAX_EDITED_RESPONSE:
        raise InputError(f"edited_response: {len(edited_response)} characters, at most {MAX_EDITED_RESPONSE}")
    if ms_spent is not None and not 0 <= ms_spent < 86_400_000:
        raise InputError(f"ms_spent: {ms_spent} is not a duration in milliseconds under a day")


def _validate_ratings(ratings: dict | None, criteria: list[str], candidate_ids: list[int]) -> None:
    """ratings = {criterion: {candidate_id: score}}; JSON turns ids into strings, so both are accepted."""
    if not ratings:
        return
    allowed = {str(c) for c in candidate_ids}
    for criterion, scores in ratings.items():
        if criterion not in criteria:
            raise InputError(f"ratings: unknown criterion {criterion!r} (project criteria: {criteria})")
        for cand, score in scores.items():
            if str(cand) not in allowed:
                raise InputError(f"ratings[{criterion}]: candidate {cand} is not in this task")
            if not (isinstance(score, int) and RATING_RANGE[0] <= score <= RATING_RANGE[1]):
                raise InputError(f"ratings[{criterion}][{cand}]: {score!r} is not an integer in 1..5")
