"""`labeling tasks build`: turn candidates into comparison tasks.

Strategies
  all_pairs     every pair of a prompt's candidates
  random_pairs  `pairs_per_prompt` pairs per prompt, drawn so that model pairs are
                balanced: across the project every model meets every other model
                about equally often (a round-robin over model pairs)
  ranking       one task of K candidates per prompt (pairwise projects: K=2),
                spread over as many models as the prompt has

Building is idempotent: a task over the same candidate set is never created twice.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import select

from labeling.db import get_project, session_scope
from labeling.models import Candidate, Judgment, Prompt, Task
from prefloop.errors import InputError

STRATEGIES = ("all_pairs", "random_pairs", "ranking")


def build_tasks(engine: Engine, project_name: str, strategy: str = "random_pairs", *, pairs_per_prompt: int = 1,
                k: int | None = None, models: list[str] | None = None, round: int | None = None,
                cross_model_only: bool = True, priority: float = 0.0, seed: int = 0) -> int:
    """Create tasks; returns how many were added."""
    if strategy not in STRATEGIES:
        raise InputError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    rng = random.Random(seed)
    with session_scope(engine) as session:
        project = get_project(session, project_name)
        if strategy != "ranking" and project.mode == "ranking":
            raise InputError(f"project {project_name!r} ranks K={project.k} candidates: use --strategy ranking")
        k = k or project.k
        by_prompt = _candidates_by_prompt(session, project.id, models, round)
        found = {c.model for cands in by_prompt.values() for c in cands}
        if missing := [m for m in models or [] if m not in found]:
            raise InputError(f"model(s) {', '.join(missing)}: no candidates in project {project_name!r}"
                             + (f" in round {round}" if round is not None else ""))
        existing = {tuple(sorted(t.candidate_ids)) for t in session.exec(select(Task).where(Task.project_id == project.id))}
        groups = _groups(strategy, by_prompt, k, pairs_per_prompt, cross_model_only, rng)
        added = 0
        for prompt_id, group in groups:
            key = tuple(sorted(c.id for c in group))
            if key in existing:
                continue
            existing.add(key)
            order = [c.id for c in group]
            rng.shuffle(order)  # no position carries meaning; the app randomises display again
            session.add(Task(project_id=project.id, prompt_id=prompt_id, candidate_ids=order, priority=priority,
                             round=max(c.round for c in group)))
            added += 1
        return added


def add_gold_task(engine: Engine, project_name: str, prompt_id: int, ranking: list[int], priority: float = 0.0) -> Task:
    """A task with a known answer (`ranking`, best first) used to measure annotator accuracy."""
    with session_scope(engine) as session:
        project = get_project(session, project_name)
        candidates = session.exec(select(Candidate).where(Candidate.id.in_(ranking))).all()
        if len(candidates) != len(ranking) or any(c.prompt_id != prompt_id for c in candidates):
            raise InputError(f"gold task: candidates {ranking} do not all belong to prompt {prompt_id}")
        task = Task(project_id=project.id, prompt_id=prompt_id, candidate_ids=list(ranking), priority=priority,
                    gold={"ranking": list(ranking)})
        session.add(task)
        session.flush()
        session.refresh(task)
        session.expunge(task)
        return task


def _candidates_by_prompt(session, project_id: int, models: list[str] | None, round: int | None):
    query = (select(Candidate).join(Prompt, Prompt.id == Candidate.prompt_id)
             .where(Prompt.project_id == project_id).order_by(Candidate.id))
    if models:
        query = query.where(Candidate.model.in_(models))
    if round is not None:
        query = query.where(Candidate.round == round)
    by_prompt: dict[int, list[Candidate]] = defaultdict(list)
    for cand in session.exec(query):
        by_prompt[cand.prompt_id].append(cand)
    return by_prompt


def _groups(strategy, by_prompt, k, pairs_per_prompt, cross_model_only, rng):
    if strategy == "all_pairs":
        return [(p, list(pair)) for p, cands in by_prompt.items() for pair in itertools.combinations(cands, 2)
                if not cross_model_only or pair[0].model != pair[1].model or _single_model(cands)]
    if strategy == "ranking":
        return [(p, _diverse_sample(cands, k, rng)) for p, cands in by_prompt.items() if len(cands) >= k]
    return _balanced_pairs(by_prompt, pairs_per_prompt, cross_model_only, rng)


def _single_model(cands) -> bool:
    return len({c.model for c in cands}) == 1


def _diverse_sample(cands, k, rng):
    """K candidates covering as many distinct models as possible."""
    by_model = defaultdict(list)
    for c in cands:
        by_model[c.model].append(c)
    for group in by_model.values():
        rng.shuffle(group)
    picked, pools = [], list(by_model.values())
    rng.shuffle(pools)
    while len(picked) < k:
        for pool in pools:
            if pool and len(picked) < k:
                picked.append(pool.pop())
    return picked


def _balanced_pairs(by_prompt, pairs_per_prompt, cross_model_only, rng):
    """Per prompt, pick the pairs whose model pair has met least often so far (round-robin)."""
    met: dict[tuple[str, str], int] = defaultdict(int)
    groups = []
    prompt_ids = list(by_prompt)
    rng.shuffle(prompt_ids)
    for p in prompt_ids:
        cands = by_prompt[p]
        pairs = list(itertools.combinations(cands, 2))
        if cross_model_only and not _single_model(cands):
            pairs = [pair for pair in pairs if pair[0].model != pair[1].model]
        rng.shuffle(pairs)
        pairs.sort(key=lambda pair: met[_model_pair(pair)])  # stable: ties stay shuffled
        for pair in pairs[:pairs_per_prompt]:
            met[_model_pair(pair)] += 1
            groups.append((p, list(pair)))
    return groups


def _model_pair(pair) -> tuple[str, str]:
    return tuple(sorted((pair[0].model, pair[1].model)))


def open_task_contents(engine: Engine, project_name: str) -> list[dict]:
    """Tasks still short of `overlap` judgments, with their conversation and candidate texts.

    The public read used by the reward-model side for active learning: it scores these
    and writes priorities back with `labeling.assign.set_priorities`.
    """
    with session_scope(engine, immediate=False) as session:
        project = get_project(session, project_name)
        judged = dict(session.exec(select(Judgment.task_id, func.count(Judgment.id))
                                   .join(Task, Task.id == Judgment.task_id)
                                   .where(Task.project_id == project.id).group_by(Judgment.task_id)).all())
        # gold tasks measure annotators and are never re-prioritised (JSON null != SQL NULL: test in Python)
        tasks = [t for t in session.exec(select(Task).where(Task.project_id == project.id))
                 if not t.gold and judged.get(t.id, 0) < project.overlap]
        candidate_ids = {c for t in tasks for c in t.candidate_ids}
        texts = dict(session.exec(select(Candidate.id, Candidate.text).where(Candidate.id.in_(candidate_ids))).all())
        prompts = dict(session.exec(select(Prompt.id, Prompt.messages)
                                    .where(Prompt.id.in_({t.prompt_id for t in tasks}))).all())
        return [{"task_id": t.id, "prompt": prompts[t.prompt_id], "candidate_ids": list(t.candidate_ids),
                 "responses": [texts[c] for c in t.candidate_ids]} for t in tasks]


def round_progress(engine: Engine, project_name: str, round: int) -> dict:
    """{"tasks": the round's regular tasks, "open": those still short of `overlap` judgments,
    "judgments": the judgments they hold}."""
    with session_scope(engine, immediate=False) as session:
        project = get_project(session, project_name)
        judged = select(Judgment.task_id, func.count(Judgment.id).label("n")).group_by(Judgment.task_id).subquery()
        rows = session.exec(select(Task.gold, judged.c.n).outerjoin(judged, judged.c.task_id == Task.id)
                            .where(Task.project_id == project.id, Task.round == round)).all()
        regular = [n or 0 for gold, n in rows if not gold]  # gold tasks only measure annotators
        return {"tasks": len(regular), "open": sum(n < project.overlap for n in regular), "judgments": sum(regular)}
