"""GRPO and RLOO on a tiny letter model: the graders' reward rises over a short run, and the policy's weights move."""

import pytest
import torch

from align.graders.mix import parse_grader_spec
from align.grpo_config import GRPOConfig, RLOOConfig
from align.grpo_trainer import GroupRelativeTrainer, logprobs_with_grad
from align.rft_data import RFTExample
from align.rollout import generate_responses, response_logprobs
from ppo_helpers import build_letter_model, tiny_cpu_settings

# The task: answer with the letter b, three times. token_f1 gives partial credit for every b.
EXAMPLES = [RFTExample(prompt, "b b b", parse_grader_spec("token_f1")) for prompt in ("a c", "c d", "e a", "d e")]


@pytest.fixture(autouse=True)
def _tiny_cpu():
    with tiny_cpu_settings():
        yield


def load(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval().requires_grad_(False)
    return policy, ref, AutoTokenizer.from_pretrained(model_dir)


@pytest.mark.parametrize("cls, extra", [
    (GRPOConfig, {"beta": 0.02}),
    (GRPOConfig, {"scale_rewards": False, "loss_type": "dr_grpo"}),
    (RLOOConfig, {}),
])
def test_the_graders_reward_rises_over_a_short_run(tmp_path, cls, extra):
    model_dir = build_letter_model(tmp_path / "lm", seed=1)
    policy, ref, tokenizer = load(model_dir)
    before = [p.detach().clone() for p in policy.parameters()]
    cfg = cls(data="unused.jsonl", steps=25, prompts_per_step=4, num_generations=8, max_new_tokens=3,
              mini_batch_size=16, learning_rate=3e-3, temperature=1.0, num_iterations=2, **extra)
    trainer = GroupRelativeTrainer(cfg, policy, ref, tokenizer, EXAMPLES)
    history = trainer.train()
    first, last = (sum(h["reward"] for h in part) / 5 for part in (history[:5], history[-5:]))
    print(f"\n{cfg.algorithm} {extra}: reward {first:.3f} -> {last:.3f}")
    assert last > first + 0.2
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert {"reward", "grader/token_f1", "full_marks", "kl_k1", "clipfrac", "response_length",
            "zero_std_groups"} <= set(history[-1])
    assert history[-1]["grader/token_f1"] == pytest.approx(history[-1]["reward"])  # one grader, no length penalty


def test_the_gradient_path_gives_the_rollouts_own_logprobs(tmp_path):
    """log pi recomputed with gradients equals the no-grad pass the rollout's ratio is measured against."""
    policy, _, tokenizer = load(build_letter_model(tmp_path / "lm", seed=2))
    torch.manual_seed(0)
    rollout = generate_responses(policy, tokenizer, ["a b", "c", "d e f"], max_new_tokens=4, temperature=0.7)
    old = response_logprobs(policy, rollout, 0.7)
    rows = torch.tensor([2, 0])
    new = logprobs_with_grad(policy, rollout, rows, 0.7)
    assert new.requires_grad and torch.allclose(new, old[rows], atol=1e-5)


@pytest.mark.parametrize("fields, message", [
    ({}, "give --data"),
    ({"data": "x", "num_generations": 1}, "num_generations must be >= 2"),
    ({"data": "x", "prompts_per_step": 3, "num_generations": 4, "mini_batch_size": 5}, "must divide"),
    ({"data": "x", "beta": -0.1}, "beta"),
    ({"data": "x", "loss_type": "mean"}, "loss_type"),
])
def test_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        GRPOConfig(**fields)
