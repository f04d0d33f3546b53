"""`labeling tasks build`: all pairs, balanced random pairs across models, ranking sets."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from sqlmodel import select

from labeling.db import session_scope
from labeling.models import Candidate, Prompt, Task
from labeling.projects import create_project
from labeling.tasks import add_gold_task, build_tasks
from prefloop.errors import InputError

MODELS = ["m1", "m2", "m3", "m4"]


@pytest.fixture
def store(memory_engine):
    """12 prompts, each with one candidate from each of 4 models."""
    with session_scope(memory_engine) as s:
        create_project(s, "pairs")
        create_project(s, "rank", mode="ranking", k=3)
        for project_id in (1, 2):
            for i in range(12):
                prompt = Prompt(project_id=project_id, messages=[{"role": "user", "content": f"q{project_id}-{i}"}])
                s.add(prompt)
                s.flush()
                s.add_all([Candidate(prompt_id=prompt.id, text=f"{m} says {i}", model=m) for m in MODELS])
    return memory_engine


def tasks(engine, project_id):
    with session_scope(engine) as s:
        return s.exec(select(Task).where(Task.project_id == project_id)).all()


def models_of(engine, task):
    with session_scope(engine) as s:
        return tuple(sorted(s.get(Candidate, c).model for c in task.candidate_ids))


def test_all_pairs_and_idempotence(store):
    assert build_tasks(store, "pairs", "all_pairs") == 12 * 6
    assert build_tasks(store, "pairs", "all_pairs") == 0  # nothing twice


def test_random_pairs_let_every_model_meet_every_other_equally(store):
    assert build_tasks(store, "pairs", "random_pairs", pairs_per_prompt=1, seed=3) == 12
    met = Counter(models_of(store, t) for t in tasks(store, 1))
    assert set(met) == set(itertools.combinations(MODELS, 2))  # all 6 model pairs
    assert max(met.values()) - min(met.values()) <= 1  # 12 pairs over 6 model pairs: 2 each, give or take
    assert all(len(set(pair)) == 2 for pair in met)  # never a model against itself


def test_ranking_sets_span_distinct_models(store):
    assert build_tasks(store, "rank", "ranking") == 12
    for task in tasks(store, 2):
        assert len(task.candidate_ids) == 3 and len(set(models_of(store, task))) == 3


def test_pair_strategies_refused_for_ranking_projects(store):
    with pytest.raises(InputError, match="use --strategy ranking"):
        build_tasks(store, "rank", "all_pairs")


def test_gold_task_must_use_its_prompts_candidates(store):
    task = add_gold_task(store, "pairs", prompt_id=1, ranking=[1, 2])
    assert task.gold == {"ranking": [1, 2]}
    with pytest.raises(InputError, match="do not all belong to prompt 1"):
        add_gold_task(store, "pairs", prompt_id=1, ranking=[1, 8])
