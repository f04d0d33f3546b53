"""A short `align dpo` run on the real embedded SmolLM2-135M: two steps on one short pair."""

from __future__ import annotations

import json

import pytest
import torch

from align.offline.dpo_config import DPOConfig
from align.offline.dpo_trainer import train_offline
from dpo_helpers import pair_row, write_jsonl
from prefloop.config import parse_config
from prefloop.metrics import read_metrics


@pytest.mark.smollm2
def test_dpo_on_smollm2_moves_the_implicit_reward_margin(smollm2_dir, tmp_path):
    torch.manual_seed(0)
    data = write_jsonl([pair_row("cats", margin=0.0)], tmp_path / "pairs.jsonl")
    out = tmp_path / "smol"
    # full fine-tuning with π_ref precomputed: no reference model stays in memory
    cfg = parse_config(DPOConfig, ["--data", str(data), "--output-dir", str(out),
                                   "--per-device-train-batch-size", "1", "--num-train-epochs", "2", "--learning-rate", "1e-5",
                                   "--logging-steps", "1", "--save-steps", "100", "--max-length", "64",
                                   "--precompute-ref-log-probs"])
    final = train_offline(cfg)
    steps = [row for row in read_metrics(out) if "rewards/margins" in row]
    assert [row["step"] for row in steps] == [1, 2]
    assert steps[0]["loss"] == pytest.approx(0.6931, abs=1e-3)  # π_θ = π_ref at step 1: −log σ(0)
    assert steps[1]["rewards/margins"] > 0 and steps[1]["loss"] < steps[0]["loss"]
    assert json.loads((out / "run.json").read_text())["parent_model"] == smollm2_dir and final == out / "final"
