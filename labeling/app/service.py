"""The annotator's use cases, shared by the page and the API (one code path saves a vote).

What an annotator receives about a task is `TaskView.public()`: the guidelines, the
conversation and the responses under their shown labels (A, B, ...). Candidate ids,
model names, the gold answer and other annotators' judgments never leave the server;
labels are mapped back to candidate ids here, from the stored assignment.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import asdict, dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from labeling import answers, assign, hot_sql
from labeling.connections import read_connection
from labeling.event_loop import WouldWait, wait_point
from labeling.app.auth import Viewer
from labeling.app.render import LABELS
from labeling.choices import CHOICES
from labeling.models import Assignment, Project
from prefloop.errors import InputError, NotFoundError


@dataclass(frozen=True)
class TaskView:
    assignment_id: int
    client_request_id: str  # fresh per served assignment: a resubmission is recorded once
    project: str
    mode: str  # pairwise | ranking
    guidelines: str
    criteria: list[str]
    conversation: list[dict]  # [{"role", "content"}]
    responses: list[dict]  # [{"label": "A", "text": ...}] in the shown order
    expires_at: str  # ISO time at which the lease lapses

    def public(self) -> dict:
        return asdict(self)


def open_projects(engine: Engine, viewer: Viewer) -> list[str]:
    """Projects this viewer may work on: the open ones (admins also see closed ones)."""
    with Session(engine) as session:
        query = select(Project.name).order_by(Project.id)
        if not viewer.is_admin:
            query = query.where(Project.is_open == True)  # noqa: E712 - SQL expression
        return list(session.exec(query).all())


def next_task(engine: Engine, viewer: Viewer, project: str) -> TaskView | None:
    """The viewer's current task in `project` (resumed or newly assigned); None when done."""
    assignment = assign.next_assignment(engine, project, viewer.id)
    return None if assignment is None else _view(engine, assignment)


def _view(engine: Engine, assignment: Assignment) -> TaskView:
    with read_connection(engine) as conn:  # one row per shown candidate, with the task's project and prompt
        rows = conn.execute(hot_sql.TASK_VIEW, {"task_id": assignment.task_id,
                                                "ids": list(assignment.display_order)}).all()
    if not rows:
        raise NotFoundError(f"task {assignment.task_id}: not found")
    task, texts = rows[0], {row.candidate_id: row.text for row in rows}
    responses = [{"label": LABELS[i], "text": texts[cid]} for i, cid in enumerate(assignment.display_order)]
    return TaskView(assignment_id=assignment.id, client_request_id=uuid.uuid4().hex, project=task.name,
                    mode=task.mode, guidelines=task.guidelines or "", criteria=list(task.criteria or []),
                    conversation=[{"role": m.get("role", "user"), "content": m.get("content", "")}
                                  for m in task.messages],
                    responses=responses, expires_at=assignment.expires_at.isoformat())


def submit(engine: Engine, viewer: Viewer, *, assignment_id: int, client_request_id: str,
           choice: str | None = None, ranking: list[str] | str | None = None, ratings: dict | None = None,
           rationale: str | None = None, edited_response: str | None = None,
           ms_spent: int | None = None) -> dict:
    """Record the viewer's answer to one of their assignments; labels refer to the shown order."""
    if choice is not None and choice not in CHOICES:
        raise InputError(f"choice: expected one of {', '.join(CHOICES)}, got {choice!r}")
    # Only a ranking or ratings name labels; a plain choice needs no look at the shown order first.
    order = list(answers.get_assignment(engine, assignment_id, viewer.id).display_order) if ranking or ratings else []
    judgment = answers.submit_judgment(
        engine, assignment_id=assignment_id, annotator_id=viewer.id, client_request_id=client_request_id,
        choice=choice or None, ranking=ranking_ids(ranking, order) if ranking else None,
        ratings=ratings_by_id(ratings, order), rationale=(rationale or "").strip() or None,
        edited_response=(edited_response or "").strip() or None, ms_spent=ms_spent)
    return {"judgment_id": judgment.id, "assignment_id": assignment_id, "recorded": True}


def ranking_ids(ranking: list[str] | str, order: list[int]) -> list[int]:
    """Best-first labels ("CAB" or ["C", "A", "B"]) to candidate ids; every shown label exactly once."""
    labels = [c for c in ranking.upper() if not c.isspace() and c not in ">,"] if isinstance(ranking, str) \
        else [str(x).strip().upper() for x in ranking]
    shown = list(LABELS[:len(order)])
    if sorted(labels) != shown:
        raise InputError(f"ranking: order all of {', '.join(shown)} once each, best first (got {''.join(labels)!r})")
    return [order[shown.index(label)] for label in labels]


def ratings_by_id(ratings: dict | None, order: list[int]) -> dict | None:
    """{criterion: {label: 1..5}} to {criterion: {candidate id: score}}; blanks are dropped."""
    if not ratings:
        return None
    shown = LABELS[:len(order)]
    out: dict[str, dict[str, int]] = {}
    for criterion, scores in ratings.items():
        for label, score in (scores or {}).items():
            if score is None or score == "":
                continue
            label = str(label).strip().upper()
            if label not in shown:
                raise InputError(f"ratings[{criterion}]: no response {label!r} (shown: {', '.join(shown)})")
            out.setdefault(str(criterion), {})[str(order[shown.index(label)])] = _score(criterion, label, score)
    return out or None


def _score(criterion: str, label: str, score) -> int:
    try:
        value = float(score)
    except (TypeError, ValueError):
        raise InputError(f"ratings[{criterion}][{label}]: {score!r} is not a number 1..5") from None
    if value != int(value) or not 1 <= value <= 5:
        raise InputError(f"ratings[{criterion}][{label}]: {score!r} is not an integer in 1..5")
    return int(value)


def skip(engine: Engine, viewer: Viewer, assignment_id: int, reason: str) -> dict:
    skipped = answers.skip(engine, assignment_id, viewer.id, reason)
    return {"assignment_id": skipped.id, "skipped": True}


def progress(engine: Engine, viewer: Viewer, project: str, open_tasks: OpenTasks | None = None) -> dict:
    count = open_tasks.count(engine, project) if open_tasks else None
    return asdict(assign.progress(engine, project, viewer.id, open_tasks=count))


class OpenTasks:
    """Each project's count of tasks with a free slot, recounted at most every `ttl` seconds.

    Every page update and every API `next_task` shows the annotator's progress. Its "remaining"
    figure needs the project-wide count of open tasks, which tests every task of the project;
    one count shared by all annotators for a couple of seconds makes progress cost only the
    annotator's own rows (the figure may lag others' claims by up to `ttl` and one recount).
    A recount takes tens of ms for a project of 50,000 tasks, so once a count is kept, a due
    recount runs in a background thread while callers go on with the kept count: no caller waits
    for it, and none runs it on the server's event loop (labeling.event_loop, WouldWait).
    """

    def __init__(self, ttl: float = 2.0):
        self.ttl = ttl
        self._counts: dict[str, tuple[float, int]] = {}
        self._recounting: set[str] = set()
        self._lock = threading.Lock()

    def count(self, engine: Engine, project: str) -> int:
        """The kept count (see `kept`), else a count made now: on the event loop, WouldWait instead, so
        that a worker thread counts (a wait point: see `ensure`)."""
        kept = self.kept(engine, project)
        if kept is not None:
            return kept
        self.ensure(engine, project)
        return self._recount(engine, project)

    def ensure(self, engine: Engine, project: str) -> None:
        """On the event loop with no count kept yet, WouldWait (a worker thread then counts; once kept, a
        count is never dropped). A call on the loop that writes and then shows progress calls this before
        its write, so that its one WouldWait comes first (labeling.event_loop: a wait point reached after
        the write raises LoopRuleBroken). Off the loop nothing is counted here: the count comes after the
        write, so that it includes it."""
        if self.kept(engine, project) is None and wait_point(f"counting project {project!r}'s open tasks"):
            raise WouldWait(f"no count of project {project!r}'s open tasks is kept yet")

    def kept(self, engine: Engine, project: str) -> int | None:
        """The kept count, a recount started in the background if it is due; None when none is kept yet."""
        with self._lock:
            at, count = self._counts.get(project, (None, 0))
            due = at is not None and time.monotonic() - at >= self.ttl and project not in self._recounting
            if due:
                self._recounting.add(project)
        if due:
            threading.Thread(target=self._recount_in_background, args=(engine, project), daemon=True).start()
        return None if at is None else count

    def _recount(self, engine: Engine, project: str) -> int:
        count = assign.open_task_count(engine, project)
        with self._lock:
            self._counts[project] = (time.monotonic(), count)
        return count

    def _recount_in_background(self, engine: Engine, project: str) -> None:
        try:
            self._recount(engine, project)
        except Exception:  # noqa: BLE001 - the kept count stays; the next due call tries again, and any
            pass  # fault of the store itself reaches the callers through their own statements
        finally:
            with self._lock:
                self._recounting.discard(project)
