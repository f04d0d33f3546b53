"""Active learning: uncertain comparisons get the highest priority and are served first."""

from __future__ import annotations

import math

import pytest
import torch
from sqlmodel import select

from labeling.assign import next_assignment
from labeling.db import session_scope
from labeling.judgments import record_judgment
from labeling.models import Candidate, Prompt, Task
from labeling.projects import create_project
from labeling.users import create_user
from reward_model.active import pair_priority, prioritize, task_priorities


def test_pair_priority_matches_hand_values():
    assert pair_priority(torch.tensor([0.3]), torch.tensor([0.3])) == pytest.approx(1.0)  # coin flip
    assert pair_priority(torch.tensor([9.0]), torch.tensor([-9.0])) < 1e-6  # certain
    # two heads that disagree symmetrically: mean p = 0.5, std = σ(1) − 0.5
    spread = 1 / (1 + math.exp(-1)) - 0.5
    assert pair_priority(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0])) == pytest.approx(1 + 2 * spread)


class FixedScorer:
    """Rewards looked up by response text: a stand-in with known values for the ranking check."""

    def __init__(self, table):
        self.table = table

    def head_scores(self, prompts, responses):
        return torch.tensor([self.table[r] for r in responses])  # (N, H)


def test_k_way_priority_is_the_most_uncertain_pair():
    scorer = FixedScorer({"a": [0.0], "b": [5.0], "c": [0.1]})
    got = task_priorities(scorer, [{"task_id": 7, "prompt": [], "responses": ["a", "b", "c"]}])
    assert got[7] == pytest.approx(1 - abs(2 * torch.sigmoid(torch.tensor(-0.1)).item() - 1))


def test_prioritize_reorders_the_queue_with_a_real_reward_model(memory_engine, tmp_path):
    from reward_model.scorer import RewardScorer
    from reward_model.testing import build_tiny_reward_model

    with session_scope(memory_engine) as s:
        project = create_project(s, "al", overlap=1)
        annotator = create_user(s, "ann", "password-1")
        task_ids = []
        for i in range(4):
            prompt = Prompt(project_id=project.id, messages=[{"role": "user", "content": f"question {i}"}])
            s.add(prompt)
            s.flush()
            cands = [Candidate(prompt_id=prompt.id, text=t, model="m") for t in (f"short {i}", "a much longer answer " * (i + 1))]
            s.add_all(cands)
            s.flush()
            task = Task(project_id=project.id, prompt_id=prompt.id, candidate_ids=[c.id for c in cands])
            s.add(task)
            s.flush()
            task_ids.append(task.id)
    # the first task is already judged (overlap 1): it is not open any more
    record_judgment(memory_engine, task_id=task_ids[0], annotator_id=annotator.id,
                    display_order=[task_ids[0] * 2 - 1, task_ids[0] * 2], choice="a_better", client_request_id="r0")

    scorer = RewardScorer.from_pretrained(build_tiny_reward_model(tmp_path / "rm", n_heads=3), dtype=torch.float32)
    priorities = prioritize(memory_engine, "al", scorer)
    assert set(priorities) == set(task_ids[1:])
    assert all(0.0 <= p <= 2.0 for p in priorities.values())
    with session_scope(memory_engine) as s:
        stored = {t.id: t.priority for t in s.exec(select(Task))}
    assert all(stored[t] == pytest.approx(p) for t, p in priorities.items())
    most_uncertain = max(priorities, key=priorities.get)
    assert next_assignment(memory_engine, "al", annotator.id).task_id == most_uncertain
