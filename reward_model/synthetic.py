"""Synthetic comparisons from a known reward with Bradley-Terry noise, and the accuracy ceiling they allow.

The true reward r*(y) = β · (#positive words − #negative words) in the response: a simple
token feature that even a 2-layer model learns in seconds. Labels are drawn as
P(A preferred to B) = σ(r*(A) − r*(B)), so no model can beat the Bayes-optimal accuracy
E[σ(|r*(A) − r*(B)|)] on held-out pairs (always pick the truly better response).
"""

from __future__ import annotations

import math
import random

from prefloop.gold import NEGATIVE, POSITIVE
from prefloop.gold import positive_words as true_reward  # the gold rule `positive_words`

NEUTRAL = ("the", "answer", "is", "here", "so", "and", "it", "we", "then", "a")
TOPICS = ("rain", "cats", "tea", "maths", "trains", "music", "bread", "stars", "rivers", "chess")


def true_reward_fn(prompts, responses) -> list[float]:
    """The known reward as a `module:function` reward (reward_model.synthetic:true_reward_fn)."""
    from reward_model.encoding import response_text

    return [true_reward(response_text(r)) for r in responses]


def synthetic_response(rng: random.Random, n_words: int) -> str:
    """n_words words drawn from the positive, negative and neutral lists (weights 0.2, 0.2, 0.6)."""
    pools = rng.choices((POSITIVE, NEGATIVE, NEUTRAL), weights=(0.2, 0.2, 0.6), k=n_words)
    return " ".join(rng.choice(pool) for pool in pools)


def make_synthetic_comparisons(n_pairs: int, seed: int = 0, beta: float = 1.0, n_words: int = 8,
                               n_prompts: int = 60) -> list[dict]:
    """Pairwise export rows (TRL conversational format) plus `true_margin` = r*(chosen) − r*(rejected)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n_pairs):
        prompt_id = rng.randrange(n_prompts)
        prompt = f"Tell me about {TOPICS[prompt_id % len(TOPICS)]}, please ({prompt_id})."
        a, b = synthetic_response(rng, n_words), synthetic_response(rng, n_words)
        delta = true_reward(a, beta) - true_reward(b, beta)
        if rng.random() >= 1 / (1 + math.exp(-delta)):  # Bradley-Terry noise: B wins w.p. σ(−Δ)
            a, b, delta = b, a, -delta
        rows.append({"prompt": [{"role": "user", "content": prompt}],
                     "chosen": [{"role": "assistant", "content": a}],
                     "rejected": [{"role": "assistant", "content": b}],
                     "prompt_id": prompt_id, "true_margin": delta})
    return rows


def bayes_accuracy(rows: list[dict]) -> float:
    """Expected accuracy of the true reward on these pairs: mean σ(|Δ*|) (a tie Δ* = 0 is a coin flip)."""
    return sum(1 / (1 + math.exp(-abs(r["true_margin"]))) for r in rows) / len(rows)
