"""The one on-policy loop under every algorithm (ppo, online-dpo, grpo, rloo), through the command line on the
tiny letter model: the same metric names in every metrics.jsonl, the learning-rate schedule, a checkpoint at
the last step, and a resume after the final step that stops at once with the same state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.cli import main as align_main
from align.onpolicy.loop import METRICS, PHASES
from dpo_helpers import write_jsonl
from ppo_helpers import build_letter_model
from prefloop.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("tiny_cpu")  # fp32, one thread (conftest)

LR = 1e-2
STEPS = 3
# names that meant one of METRICS before the loop was shared: none may come back
RETIRED = ("score", "lr", "reward/mean", "kl_k1", "clipfrac", "response_length", "terminated", "zero_std_groups")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    model = build_letter_model(root / "lm", seed=1, initializer_range=0.1)
    prompts = write_jsonl([{"prompt": [{"role": "user", "content": w}]} for w in ("a b", "c d", "e f", "g h")],
                          root / "prompts.jsonl")
    rft = write_jsonl([{"prompt": p, "reference": "b b b"} for p in ("a c", "c d", "e a", "d e")], root / "rft.jsonl")
    return model, prompts, rft


def argv(command: str, data, out: Path) -> list[str]:
    model, prompts, rft = data
    common = ["--model", str(model), "--output-dir", str(out), "--max-steps", str(STEPS), "--max-new-tokens", "3",
              "--learning-rate", str(LR), "--lr-schedule", "linear", "--sample-every", "0", "--save-steps", "100"]
    if command in ("grpo", "rloo"):
        return [command, *common, "--prompts", str(rft), "--graders", "token_f1", "--batch-size", "2",
                "--num-generations", "4", "--mini-batch-size", "8", "--beta", "0.05"]
    specific = ["--batch-size", "4", "--mini-batch-size", "2"] if command == "ppo" else \
        ["--batch-size", "2", "--num-generations", "4"]
    return [command, *common, "--prompts", str(prompts), "--reward-model", "ppo_helpers:bandit_reward", *specific]


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """Each algorithm trained STEPS steps, then resumed once it had finished."""
    out = {}
    for command in ("ppo", "online-dpo", "grpo", "rloo"):
        run = tmp_path_factory.mktemp(command.replace("-", "_")) / "run"
        assert align_main(argv(command, data, run)) == 0
        finished = {"weights": load_file(str(run / "final" / "model.safetensors")), "metrics": read_metrics(run),
                    "record": json.loads((run / "run.json").read_text())}
        assert align_main(argv(command, data, run) + ["--resume"]) == 0
        out[command] = (run, finished)
    return out


def test_every_algorithm_logs_the_one_vocabulary(runs):
    names = {}
    for command, (run, _) in runs.items():
        rows = [row for row in read_metrics(run) if row["step"] >= 1]
        assert [row["step"] for row in rows] == list(range(1, STEPS + 1)), command
        for row in rows:
            missing = set(METRICS) - set(row)
            assert not missing, f"{command} step {row['step']}: {sorted(missing)}"
            assert {f"time/{p}" for p in PHASES} <= set(row), command
            assert not set(RETIRED) & set(row), f"{command}: {sorted(set(RETIRED) & set(row))}"
        names[command] = set(rows[-1])
        # measured, not placeholders: every algorithm here has a reference (beta > 0) and an update each step
        for key in ("reward", "kl", "entropy", "loss", "grad_norm", "completions/mean_length"):
            assert all(row[key] is not None for row in rows), (command, key)
    shared = set.intersection(*names.values())
    assert set(METRICS) <= shared


def test_one_learning_rate_schedule_for_every_algorithm(runs):
    for command, (run, _) in runs.items():
        lrs = [row["learning_rate"] for row in read_metrics(run) if row["step"] >= 1]
        assert lrs == pytest.approx([LR * (1 - s / STEPS) for s in range(STEPS)]), command  # CleanRL's anneal_lr


def test_a_checkpoint_at_the_last_step_and_a_resume_after_it_changes_nothing(runs, data):
    base = load_file(str(Path(data[0]) / "model.safetensors"))
    for command, (run, finished) in runs.items():
        assert json.loads((run / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text()) == \
            {"step": STEPS}, command
        assert read_metrics(run) == finished["metrics"], command  # no step ran again, none was dropped
        weights = load_file(str(run / "final" / "model.safetensors"))
        assert all(torch.equal(weights[k], v) for k, v in finished["weights"].items()), command
        record = json.loads((run / "run.json").read_text())
        assert record["status"] == "finished" and record["config"]["resume"] is True, command
        assert any(not torch.equal(v, base[k]) for k, v in weights.items()), command  # it did train
