"""The real SmolLM2-135M as a LoRA reward model: two steps, merged, saved, and scored (kept short)."""

from __future__ import annotations

import json

import pytest
import torch

from prefloop.data import write_records
from reward_model.cli import main as cli
from reward_model.synthetic import make_synthetic_comparisons


@pytest.mark.smollm2
def test_smollm2_lora_reward_model_trains_merges_and_scores(tmp_path, smollm2_dir):
    from safetensors.torch import load_file

    from reward_model.scorer import RewardScorer

    write_records(make_synthetic_comparisons(8, seed=5), tmp_path / "pairs.jsonl")
    out = tmp_path / "rm"
    assert cli(["train", "--data", str(tmp_path / "pairs.jsonl"), "--output-dir", str(out), "--lora",
                "--lora-r", "4", "--max-steps", "2", "--per-device-train-batch-size", "2", "--learning-rate", "1e-3",
                "--normalize-samples", "8", "--max-length", "96"]) == 0  # default model
    trained, base = load_file(out / "final" / "model.safetensors"), load_file(f"{smollm2_dir}/model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(trained[key], base[key])  # the LoRA update was merged into the weights
    assert json.loads((out / "final" / "reward_model.json").read_text())["base_model"] == "smollm2-135m-instruct"
    scores = RewardScorer.from_pretrained(out).score(["Say something."] * 2, ["great and kind", "rude and wrong"])
    assert all(torch.isfinite(torch.tensor(scores))) and scores[0] != scores[1]
