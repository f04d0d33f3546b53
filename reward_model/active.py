"""Active learning: raise the priority of the comparisons the reward model is least sure about.

For a pair (A, B) each ensemble head h gives p_h = σ(r_h(A) − r_h(B)) (Bradley-Terry).
A pair is worth an annotator's time when the model's mean prediction is near a coin
flip or when its heads disagree:

    priority = 1 − |2·p̄ − 1| + 2·std_h(p_h)          (in [0, 2]; 1 = coin flip, no disagreement)

the margin criterion of uncertainty sampling plus the ensemble spread (query by
committee). With one head the second term is 0. For K-way tasks the priority is the
maximum over the task's pairs. Priorities go back to the store through labeling's
public `set_priorities`; the app serves higher priorities first.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from prefloop.config import parse_config
from prefloop.fields import store_field


def pair_priority(head_a, head_b) -> float:
    """head_a, head_b: (H,) tensors of normalised rewards of the two responses under each head."""
    import torch

    p = torch.sigmoid(head_a - head_b)  # (H,)
    spread = p.std(unbiased=False) if p.numel() > 1 else p.new_zeros(())
    return float(1 - (2 * p.mean() - 1).abs() + 2 * spread)


def task_priorities(scorer, tasks: list[dict]) -> dict[int, float]:
    """{task_id: priority} for rows of `labeling.tasks.open_task_contents`."""
    prompts = [task["prompt"] for task in tasks for _ in task["responses"]]
    responses = [text for task in tasks for text in task["responses"]]
    heads = scorer.head_scores(prompts, responses) if responses else None  # (N, H)
    priorities, row = {}, 0
    for task in tasks:
        k = len(task["responses"])
        scores = heads[row:row + k]
        priorities[task["task_id"]] = max(pair_priority(scores[i], scores[j])
                                          for i, j in itertools.combinations(range(k), 2))
        row += k
    return priorities


def prioritize(engine, project: str, scorer) -> dict[int, float]:
    from labeling.assign import set_priorities
    from labeling.tasks import open_task_contents

    priorities = task_priorities(scorer, open_task_contents(engine, project))
    if priorities:
        set_priorities(engine, priorities)
    return priorities


@dataclass
class PrioritizeConfig:
    """Score a project's open comparisons and serve the most uncertain first (active learning)."""

    model: str = field(default="", metadata={"help": "reward model directory (an ensemble gives the spread term)"})
    project: str = field(default="", metadata={"help": "project whose open tasks get new priorities"})
    store: str | None = store_field()
    batch_size: int = field(default=16, metadata={"help": "responses scored per forward pass"})

    def __post_init__(self):
        if not self.model or not self.project:
            raise ValueError("--model and --project are required")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def main(argv: list[str]) -> int:
    cfg = parse_config(PrioritizeConfig, argv, prog="reward-model prioritize")
    from labeling.db import get_project, open_store, session_scope
    from reward_model.scorer import RewardScorer

    engine = open_store(cfg.store, create=False)
    with session_scope(engine, immediate=False) as session:  # before the model loads
        get_project(session, cfg.project)
    priorities = prioritize(engine, cfg.project, RewardScorer.from_pretrained(cfg.model, batch_size=cfg.batch_size))
    ranked = sorted(priorities.values(), reverse=True)
    top = ", ".join(f"{p:.2f}" for p in ranked[:5])
    print(f"{len(priorities)} open tasks re-prioritised in {cfg.project!r}; highest: {top or 'none'}")
    return 0
