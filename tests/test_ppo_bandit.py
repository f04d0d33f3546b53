"""The closed-form check: PPO with a fixed KL penalty reaches pi*(y) ∝ pi_ref(y) exp(r(y) / beta).

For one prompt and a one-token response y, the KL-regularised objective
    max_pi  E_{y~pi}[r(y)] - beta * KL(pi || pi_ref)
has the unique optimum pi*(y) = pi_ref(y) exp(r(y) / beta) / Z (Ziegler et al. 2019 §2;
Rafailov et al. 2023 eq. 4). The policy here is trained by `align ppo` itself, through the
command line, with the same code path as any run; only the model and reward are small.
"""

import json
import math

import pytest
import torch

from align.cli import main as align_main
from ppo_helpers import BANDIT_REWARD, build_letter_model, next_token_distribution
from prefloop.metrics import read_metrics

BETA = 0.5
PROMPT = "a b c"


pytestmark = pytest.mark.usefixtures("tiny_cpu")  # fp32, one thread (conftest)


def tv(p, q) -> float:
    return 0.5 * (p - q).abs().sum().item()


def test_ppo_reaches_the_kl_regularised_optimum_of_a_bandit(tmp_path):
    model_dir = build_letter_model(tmp_path / "lm", seed=3, initializer_range=0.1)
    pi_ref, tokenizer = next_token_distribution(model_dir, PROMPT)
    # r(y) over the whole vocabulary: special tokens decode to "" and earn 0.
    r = torch.tensor([BANDIT_REWARD.get(tokenizer.decode([i], skip_special_tokens=True).strip(), 0.0)
                      for i in range(len(pi_ref))], dtype=torch.float64)
    pi_star = pi_ref * torch.exp(r / BETA)
    pi_star /= pi_star.sum()
    assert tv(pi_ref, pi_star) > 0.25  # the optimum is far from where training starts

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"text": PROMPT}) + "\n")
    out = tmp_path / "run"
    rc = align_main([
        "ppo", "--model", str(model_dir), "--reward-model", "ppo_helpers:bandit_reward", "--prompts", str(prompts),
        "--output-dir", str(out), "--max-steps", "30", "--batch-size", "64", "--mini-batch-size", "16",
        "--num-iterations", "4", "--max-new-tokens", "1", "--temperature", "1.0", "--beta", str(BETA),
        "--learning-rate", "5e-3", "--lr-schedule", "linear", "--sample-every", "0", "--save-steps", "1000",
    ])
    assert rc == 0
    pi, _ = next_token_distribution(out / "final", PROMPT)
    print(f"\nPPO bandit: TV(pi, pi*) = {tv(pi, pi_star):.4f}, TV(pi_ref, pi*) = {tv(pi_ref, pi_star):.4f}")
    assert tv(pi, pi_star) < 0.05, f"TV(pi, pi*) = {tv(pi, pi_star):.3f}; pi = {pi.numpy().round(3)}"
    # The KL the run logged at the end (k1 over its own samples) approaches KL(pi* || pi_ref).
    kl_star = (pi_star * (pi_star / pi_ref).log()).sum().item()
    late_kl = sum(row["kl"] for row in read_metrics(out)[-10:]) / 10
    assert late_kl == pytest.approx(kl_star, abs=0.1)
    # ... and the expected reward moved from E_ref[r] to E_pi*[r].
    assert (pi * r).sum().item() == pytest.approx((pi_star * r).sum().item(), abs=0.05)
    assert math.isfinite(kl_star) and (pi_star * r).sum() > (pi_ref * r).sum() + 0.2
