"""Every on-policy trainer under every engine: two CPU processes over gloo train exactly as one process on the
same global batch.

One process: batch 2B in two sampling shards (`--sampling-shards 2`), trained in this Python process. Two
processes: batch B each under `accelerate launch` (conftest's `accelerate_launch`), the engine set by
tests/engine_launch.py: DDP (accelerate's own choice for CPU processes), FSDP2 (`fully_shard`, one unit per
decoder layer, weights, gradients and optimizer state sharded), DeepSpeed ZeRO-2 and ZeRO-3. A shard's
sampling noise and minibatch order follow its place in the global batch, every loss is a mean over the
global minibatch, the engine reduces the gradients and the loop sets the learning rate of each step
(a linear decay here) in the engine's optimizer: after two steps (the second sampled from the
weights the first produced) the final weights agree to TOLERANCE while training moved them by far more.
The difference left is float summation order (a gradient summed in two halves, then averaged).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.cli import main as align_main
from dpo_helpers import write_jsonl
from ppo_helpers import build_letter_model
from prefloop.testing import tiny_cpu_settings

TOLERANCE = 1e-5  # max |w_two - w_one| over all weights; training moves them by > 1e-2
ENGINES = ["ddp", "fsdp2", "zero2", "zero3"]
# what the engine prints once prepared: the distributed type and the module accelerate made of the policy
ENGINE_LINES = {"ddp": "engine MULTI_CPU: DistributedDataParallel", "fsdp2": "engine FSDP: FSDP",
                "zero2": "engine DEEPSPEED ZeRO-2: DeepSpeedEngine", "zero3": "engine DEEPSPEED ZeRO-3: DeepSpeedEngine"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    model = build_letter_model(root / "lm", seed=1, initializer_range=0.1)
    prompts = write_jsonl([{"prompt": [{"role": "user", "content": w}]} for w in ("a b", "c d", "e f", "g h", "b c",
                                                                                   "d e")], root / "prompts.jsonl")
    rft = write_jsonl([{"prompt": p, "reference": "b b b"} for p in ("a c", "c d", "e a", "d e")], root / "rft.jsonl")
    return model, prompts, rft


def flags(command: str, data, processes: int) -> list[str]:
    """The command's flags for `processes` processes over the same global batch (2 x B prompts per step)."""
    model, prompts, rft = data
    common = ["--model", model, "--max-steps", 2, "--max-new-tokens", 3, "--sample-every", 0, "--lr-schedule", "linear"]
    one = processes == 1  # one process: the whole global batch in two shards
    if command == "ppo":
        return ["ppo", *common, "--prompts", prompts, "--reward-model", "ppo_helpers:bandit_reward",
                "--learning-rate", 1e-2, "--batch-size", 4 if one else 2, "--mini-batch-size", 4 if one else 2]
    if command == "online-dpo":
        return ["online-dpo", *common, "--prompts", prompts, "--reward-model", "ppo_helpers:bandit_reward",
                "--learning-rate", 1e-2, "--num-generations", 4, "--batch-size", 4 if one else 2]
    return [command, *common, "--prompts", rft, "--graders", "token_f1", "--learning-rate", 3e-3,
            "--num-generations", 4, "--num-iterations", 2, "--beta", 0.05,
            "--batch-size", 4 if one else 2, "--mini-batch-size", 8 if one else 4]


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    """The one-process run of each command (made once, on first use): its final weights."""
    done: dict[str, dict[str, torch.Tensor]] = {}

    def run(command: str) -> dict[str, torch.Tensor]:
        if command not in done:
            out = tmp_path_factory.mktemp(command.replace("-", "_")) / "one"
            with tiny_cpu_settings():
                argv = [str(a) for a in flags(command, data, 1)] + ["--sampling-shards", "2", "--output-dir", str(out)]
                assert align_main(argv) == 0
            done[command] = load_file(str(out / "final" / "model.safetensors"))
        return done[command]

    return run


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("command", ["ppo", "online-dpo", "grpo", "rloo"])
def test_two_processes_equal_one_on_the_same_global_batch(accelerate_launch, data, one_process, tmp_path, command,
                                                          engine):
    out = tmp_path / "two"
    proc = accelerate_launch("engine_launch", engine, *flags(command, data, 2), "--output-dir", out)
    assert "2 process(es)" in proc.stdout and proc.stdout.count(ENGINE_LINES[engine]) == 1, proc.stdout[-3000:]
    one, two = one_process(command), load_file(str(out / "final" / "model.safetensors"))
    base = load_file(str(Path(data[0]) / "model.safetensors"))
    assert one.keys() == two.keys()
    moved = max((one[k] - base[k]).abs().max().item() for k in one)
    differ = max((one[k] - two[k]).abs().max().item() for k in one)
    print(f"\n{command} under {engine}: max |two - one| = {differ:.2e}, max |one - base| = {moved:.2e}")
    assert moved > 1e-2 and differ < TOLERANCE
