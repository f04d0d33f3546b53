"""Reward models and reward functions for other packages' tests (nothing is downloaded).

    from reward_model.testing import build_tiny_reward_model
    rm_dir = build_tiny_reward_model(tmp_path / "rm")     # loads with RewardScorer / load_reward
    load_reward("reward_model.testing:length_reward")      # a plain-callable reward
"""

from __future__ import annotations

import tempfile
from pathlib import Path

# A fixed reference sample: the tiny model's normalisation is fitted on it, so its
# rewards have a meaningful spread (std 1 here) although the model is untrained.
REFERENCE_PROMPTS = ["What is 2 + 2?", "Name a colour.", "Say hello.", "Write a haiku about rain.",
                     "Give me a fruit.", "What day comes after Monday?", "Translate 'cat' to French.", "Count to three."]
REFERENCE_RESPONSES = ["4", "Blue.", "Hello there! How can I help you today?", "Rain on the roof, soft and grey.",
                       "An apple.", "Tuesday comes after Monday.", "Chat.", "One, two, three."]


def build_tiny_reward_model(out_dir: str | Path, seed: int = 0, n_heads: int = 1) -> Path:
    """An untrained tiny reward model in exactly the format `reward-model train` saves."""
    from prefloop.testing import build_tiny_causal_lm
    from reward_model.artifact import save_reward_model
    from reward_model.backbone import load_backbone
    from reward_model.scorer import RewardScorer

    with tempfile.TemporaryDirectory() as tmp:
        lm_dir = build_tiny_causal_lm(Path(tmp) / "lm", seed=seed)
        model, tokenizer = load_backbone(str(lm_dir), n_heads=n_heads, seed=seed)
    scorer = RewardScorer(model, tokenizer)
    offset, scale = scorer.fit_normalisation(REFERENCE_PROMPTS, REFERENCE_RESPONSES)
    metadata = {"base_model": "tiny-random-llama", "trained": False, "seed": seed,
                "reward_offset": offset, "reward_scale": scale,
                "normalisation": {"n_reference": len(REFERENCE_RESPONSES), "source": "reward_model.testing"},
                "max_length": 1024}
    return save_reward_model(model, tokenizer, out_dir, metadata)


def length_reward(prompts, responses) -> list[float]:
    """A known reward for tests: longer responses are better (0.1 per word)."""
    from reward_model.encoding import response_text

    return [0.1 * len(response_text(r).split()) for r in responses]
