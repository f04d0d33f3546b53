"""`align sft`: TRL's SFTTrainer on the sft export, end to end on the tiny model, from a file and the store."""

from __future__ import annotations

import json

import pytest
import torch

from align.offline.sft_config import SFTConfig
from align.offline.sft_trainer import train_sft
from dpo_helpers import TOPICS, load_weights, sft_row, write_jsonl
from prefloop.config import parse_config
from prefloop.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("tiny_cpu")  # fp32, one thread (conftest)


def test_sft_end_to_end_lowers_the_held_out_loss(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    rows = [sft_row(t) for t in TOPICS[:16]]
    # the other export shape: prompt/completion columns instead of messages
    rows[1] = {"prompt": rows[1]["messages"][:1], "completion": rows[1]["messages"][1:]}
    # what `labeling export --format sft --test-fraction 0.25` writes: 12 training prompts, 4 held out
    data = write_jsonl(rows[:12], tmp_path / "sft.train.jsonl")
    write_jsonl(rows[12:], tmp_path / "sft.test.jsonl")
    out = tmp_path / "sft"
    cfg = parse_config(SFTConfig, ["--model", tiny_model_dir, "--data", str(data), "--output-dir", str(out),
                                   "--learning-rate", "3e-3", "--max-steps", "6", "--per-device-train-batch-size", "4",
                                   "--logging-steps", "2", "--save-steps", "6",
                                   "--max-length", "128"])
    final = train_sft(cfg)

    base, trained = load_weights(tiny_model_dir), load_weights(final)  # plain transformers loads it
    assert all(not torch.equal(base[k], trained[k]) for k in base)
    meta = json.loads((out / "run.json").read_text())
    assert meta["data"]["eval_data"].endswith("sft.test.jsonl")  # the export's split, not a second one
    assert meta["train_examples"] == 12 and meta["eval_examples"] == 4
    before, after = meta["eval_before"]["eval_loss"], meta["eval_after"]["eval_loss"]
    print(f"\nheld-out SFT loss {before:.3f} -> {after:.3f}")
    assert after < before - 1.0  # −log π(y|x) on prompts never trained on
    assert any("loss" in row for row in read_metrics(out))
    assert (out / "checkpoints" / "checkpoint-6").is_dir() and (out / "tensorboard").is_dir()
    assert final == out / "final"


def test_sft_reads_the_store_directly(tiny_model_dir, sqlite_url, tmp_path):
    from labeling.db import open_store
    from export_store import build_pairwise_store

    engine = open_store(sqlite_url)
    build_pairwise_store(engine)
    engine.dispose()
    torch.manual_seed(0)
    cfg = parse_config(SFTConfig, ["--model", tiny_model_dir, "--store", sqlite_url, "--project", "p",
                                   "--output-dir", str(tmp_path / "store"), "--max-steps", "1",
                                   "--per-device-train-batch-size", "2"])
    train_sft(cfg)
    meta = json.loads((tmp_path / "store" / "run.json").read_text())
    assert meta["data"]["kind"] == "store" and meta["data"]["records"] == meta["train_examples"] >= 1
    assert meta["data"]["max_judgment_id"] == 19


@pytest.mark.parametrize("row, message", [
    ({"text": "hello"}, "row 1: missing field 'messages' (or 'prompt' and 'completion')"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "row 1: field 'messages': the last message must be from "
                                                        "the assistant"),
])
def test_sft_bad_input_is_one_line(tiny_model_dir, tmp_path, capsys, row, message):
    from align.cli import main

    data = write_jsonl([row], tmp_path / "sft.jsonl")
    assert main(["sft", "--model", tiny_model_dir, "--data", str(data), "--output-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
