"""The labeling read model: a consistent snapshot of a project and its judgments as votes.

What export, stats, the leaderboard and align's store readers all read; no export logic here
(aggregation and row formats live in `labeling.export`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from labeling.choices import preference, ranking_pairs
from labeling.db import get_project
from labeling.models import Annotator, Candidate, Judgment, Prompt, Task


# --- a consistent snapshot of the project -------------------------------------------

@dataclass
class Snapshot:
    project: object  # labeling.models.Project (detached)
    prompts: dict[int, Prompt]
    candidates: dict[int, Candidate]
    tasks: dict[int, Task]
    judgments: list[Judgment]  # ordered by id
    annotators: dict[int, str]  # id -> name
    max_judgment_id: int | None


def load_snapshot(engine: Engine, project_name: str, *, until_judgment_id: int | None = None,
                  rounds: tuple[int, ...] = ()) -> Snapshot:
    """Everything an export needs, read in one transaction (REPEATABLE READ on PostgreSQL)."""
    with Session(engine) as session:
        if engine.dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        project = get_project(session, project_name)
        tasks = {t.id: t for t in session.exec(select(Task).where(Task.project_id == project.id).order_by(Task.id))
                 if not rounds or t.round in rounds}
        query = (select(Judgment).join(Task, Task.id == Judgment.task_id)
                 .where(Task.project_id == project.id).order_by(Judgment.id))
        if until_judgment_id is not None:
            query = query.where(Judgment.id <= until_judgment_id)
        judgments = [j for j in session.exec(query) if j.task_id in tasks]
        prompts = {p.id: p for p in session.exec(select(Prompt).where(Prompt.project_id == project.id))}
        candidates = {c.id: c for c in session.exec(
            select(Candidate).join(Prompt, Prompt.id == Candidate.prompt_id).where(Prompt.project_id == project.id))}
        annotators = {a.id: a.name for a in session.exec(select(Annotator))}
    max_id = max((j.id for j in judgments), default=None)
    return Snapshot(project, prompts, candidates, tasks, judgments, annotators, max_id)


# --- votes and gold accuracy --------------------------------------------------------

@dataclass(frozen=True)
class Vote:
    """One judgment in candidate ids: `outcome` = winner id, "tie" or "both_bad" (pairwise)."""

    judgment: Judgment
    outcome: object | None
    strength: int
    ranking: tuple | None


def to_vote(judgment: Judgment, mode: str) -> Vote | None:
    """The judgment in candidate ids, or None if it holds no answer for this project's mode."""
    if mode == "ranking":
        ranking = tuple(judgment.ranking or ())
        return Vote(judgment, ranking[0], 0, ranking) if ranking else None
    if judgment.choice is None:
        return None
    pref = preference(judgment.display_order, judgment.choice)
    outcome = pref.chosen if pref.label == "win" else pref.label
    ranking = (pref.chosen, pref.rejected) if pref.label == "win" else None
    return Vote(judgment, outcome, pref.strength, ranking)


def gold_correct(task: Task, judgment: Judgment) -> bool:
    """A judgment of a gold task is correct iff its winner (top of its ranking) is the gold winner."""
    if judgment.ranking:
        return judgment.ranking[0] == task.gold["ranking"][0]
    return judgment.choice is not None and preference(judgment.display_order, judgment.choice).chosen == \
        task.gold["ranking"][0]


def gold_accuracy(snapshot: Snapshot) -> dict[int, float]:
    """annotator id -> share of their gold-task judgments that are correct (annotators with gold only)."""
    scores: dict[int, list[bool]] = defaultdict(list)
    for j in snapshot.judgments:
        task = snapshot.tasks[j.task_id]
        if task.gold:
            scores[j.annotator_id].append(gold_correct(task, j))
    return {a: sum(s) / len(s) for a, s in scores.items()}


def agreement_triples(snapshot: Snapshot, votes: list[Vote]) -> list[tuple]:
    """(item, rater, label) for agreement statistics, with labels that mean the same on every item.

    Pairwise: one item per task, labelled 0 / 1 (the winner's position in the task's candidate
    list, which is random, not the order shown), "tie" or "both_bad". Ranking: one item per
    candidate pair of a task, labelled 0 if the lower id is ranked better, else 1.
    """
    triples = []
    for v in votes:
        j = v.judgment
        if snapshot.project.mode == "pairwise":
            label = v.outcome if v.outcome in ("tie", "both_bad") else \
                snapshot.tasks[j.task_id].candidate_ids.index(v.outcome)
            triples.append((j.task_id, j.annotator_id, label))
        elif v.ranking:
            for better, worse in ranking_pairs(list(v.ranking)):
                triples.append(((j.task_id, min(better, worse), max(better, worse)), j.annotator_id,
                                int(better > worse)))
    return triples


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # SQLite drops the zone
