"""Every trainer under `accelerate launch --config_file configs/accelerate_ddp.yaml --num_processes 2`:
two CPU processes (gloo), the same flags as the one-process command, on tiny models.

What each test holds a run to: it finishes; the processes ended with identical weights (the trainer
checks, and the main process says so once); the weights changed; metrics.jsonl has each step once;
the global batch is num_processes x the per-device batch; only the main process wrote the run.
`align ppo`'s two-process test is tests/test_ppo_train.py's; the launcher is conftest's
`accelerate_launch`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dpo_helpers import TOPICS, pair_row, sft_row, write_jsonl
from ppo_helpers import build_letter_model
from prefloop.metrics import read_metrics

AGREE = "2 processes hold identical weights"


def _weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def _changed(before_dir, after_dir) -> bool:
    """Some weight the two models share (a reward model shares the backbone) differs."""
    before, after = _weights(before_dir), _weights(after_dir)
    shared = before.keys() & after.keys()
    assert shared
    return any(not torch.equal(before[k], after[k]) for k in shared)


def _steps(out) -> list[int]:
    return [row["step"] for row in read_metrics(out)]


@pytest.fixture(scope="module")
def letter_dir(tmp_path_factory):
    return build_letter_model(tmp_path_factory.mktemp("letters") / "lm", seed=1)


@pytest.fixture(scope="module")
def letter_prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    rows = [{"prompt": [{"role": "user", "content": w}]} for w in ("a b", "c d", "e f", "g h", "b c", "d e")]
    return write_jsonl(rows, path)


def test_reward_model(accelerate_launch, tiny_model_dir, tmp_path):
    from prefloop.data import write_records
    from reward_model.scorer import RewardScorer
    from reward_model.synthetic import make_synthetic_comparisons

    data = tmp_path / "pairs.train.jsonl"
    write_records(make_synthetic_comparisons(16, seed=0), data)
    out = tmp_path / "rm"
    proc = accelerate_launch("reward_model.cli", "train", "--model", tiny_model_dir, "--data", data,
                             "--output-dir", out, "--max-steps", 2, "--per-device-train-batch-size", 2,
                             "--logging-steps", 1, "--save-steps", 2, "--learning-rate", 1e-3)
    assert proc.stdout.count(AGREE) == 1
    rows = read_metrics(out)
    assert _steps(out) == [1, 2]
    # comparisons consumed: step x per-device batch x 2 processes
    assert [r["comparisons_seen"] for r in rows] == [4, 8]
    assert len((out / "data" / "train.jsonl").read_text().splitlines()) == 16  # written once, whole
    assert _changed(tiny_model_dir, out / "final")
    scorer = RewardScorer.from_pretrained(out)
    assert len(scorer.score(["hi"], ["good"])) == 1
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_sft_and_resume(accelerate_launch, tiny_model_dir, tmp_path):
    data = write_jsonl([sft_row(t) for t in TOPICS[:8]], tmp_path / "sft.train.jsonl")
    out = tmp_path / "sft"
    flags = ["--model", tiny_model_dir, "--data", data, "--output-dir", out, "--per-device-train-batch-size", 2,
             "--logging-steps", 1, "--save-steps", 1, "--max-length", 64, "--learning-rate", 1e-3]
    accelerate_launch("align.cli", "sft", *flags, "--max-steps", 1)
    first = read_metrics(out)
    proc = accelerate_launch("align.cli", "sft", *flags, "--max-steps", 2, "--resume")
    assert proc.stdout.count(AGREE) == 1
    rows = read_metrics(out)
    assert _steps(out) == [1, 2]  # each step logged once
    assert rows[0] == first[0]  # step 1 is the first run's: the second continued from checkpoint-1
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    # 8 examples, 2 per process x 2 processes: an epoch is 2 steps (4 on one process)
    assert rows[0]["epoch"] == pytest.approx(0.5)
    assert _changed(tiny_model_dir, out / "final")


def test_dpo_offline(accelerate_launch, tiny_model_dir, tmp_path):
    data = write_jsonl([pair_row(t) for t in TOPICS[:8]], tmp_path / "pairs.train.jsonl")
    write_jsonl([pair_row(t) for t in TOPICS[8:12]], tmp_path / "pairs.test.jsonl")
    out = tmp_path / "dpo"
    proc = accelerate_launch("align.cli", "dpo", "--model", tiny_model_dir, "--data", data, "--output-dir", out,
                             "--max-steps", 2, "--per-device-train-batch-size", 2, "--logging-steps", 1,
                             "--save-steps", 2, "--max-length", 64, "--learning-rate", 1e-3, "--lora",
                             "--lora-r", 4)
    assert proc.stdout.count(AGREE) == 1
    rows = read_metrics(out)
    assert _steps(out) == [0, 1, 2]  # held-out evaluation at step 0, then one row per step
    assert rows[1]["epoch"] == pytest.approx(0.5)  # 8 pairs, 2 x 2 per step
    assert "eval_rewards/accuracies" in rows[-1]
    assert _changed(tiny_model_dir, out / "final")  # the LoRA adapter, merged


def test_online_dpo(accelerate_launch, letter_dir, letter_prompts, tmp_path):
    out = tmp_path / "odpo"
    proc = accelerate_launch("align.cli", "online-dpo", "--model", letter_dir, "--prompts", letter_prompts,
                             "--reward-model", "ppo_helpers:letter_a_reward", "--output-dir", out,
                             "--num-generations", 4, "--batch-size", 3, "--max-new-tokens", 4,
                             "--learning-rate", 1e-2, "--max-steps", 2, "--save-steps", 1)
    assert proc.stdout.count(AGREE) == 1 and "2 process(es)" in proc.stdout
    rows = read_metrics(out)
    assert _steps(out) == [1, 2]
    # counts are summed over processes: every prompt of the global batch (2 x 3) is a pair or a tie
    assert all(r["pairs"] + r["skipped_ties"] == 6 for r in rows)
    assert _changed(letter_dir, out / "final")
    assert json.loads((out / "run.json").read_text())["num_processes"] == 2


@pytest.mark.parametrize("command", ["grpo", "rloo"])
def test_group_relative_and_resume(accelerate_launch, letter_dir, tmp_path, command):
    data = write_jsonl([{"prompt": p, "reference": "b b b"} for p in ("a c", "c d", "e a", "d e")],
                       tmp_path / "rft.jsonl")
    out = tmp_path / command
    flags = ["--model", letter_dir, "--prompts", data, "--graders", "token_f1", "--output-dir", out,
             "--batch-size", 2, "--num-generations", 4, "--max-new-tokens", 3, "--mini-batch-size", 4,
             "--learning-rate", 3e-3, "--save-steps", 1]
    proc = accelerate_launch("align.cli", command, *flags, "--max-steps", 2, "--sample-every", 1)
    assert proc.stdout.count(AGREE) == 1
    # sample tables come from the main process only: its 2 x 4 answers per logged step
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(s["step"] for s in samples) == [1] * 8 + [2] * 8
    first = read_metrics(out)
    # the last step's state is final/; checkpoint-1 is what a longer run resumes from
    proc = accelerate_launch("align.cli", command, *flags, "--max-steps", 3, "--sample-every", 0, "--resume")
    assert "resumed from" in proc.stdout and proc.stdout.count(AGREE) == 1
    assert _steps(out) == [1, 2, 3] and read_metrics(out)[0] == first[0]
    assert _changed(letter_dir, out / "final")


def test_fsdp_config_on_a_cpu_trains_data_parallel_and_says_so(accelerate_launch, tiny_model_dir, tmp_path):
    """configs/accelerate_fsdp.yaml on CPU processes: accelerate enables FSDP for GPUs only, so the run is
    plain DDP (the replicas agree, which sharded weights would not be compared for) and says so once."""
    data = write_jsonl([sft_row(t) for t in TOPICS[:4]], tmp_path / "sft.train.jsonl")
    out = tmp_path / "sft"
    proc = accelerate_launch("align.cli", "sft", "--model", tiny_model_dir, "--data", data, "--output-dir", out,
                             "--max-steps", 1, "--per-device-train-batch-size", 2, "--max-length", 64,
                             config="accelerate_fsdp.yaml")
    assert proc.stdout.count("FSDP needs GPUs under accelerate") == 1
    assert proc.stdout.count(AGREE) == 1
    assert _changed(tiny_model_dir, out / "final")


FSDP_SAVE = """
import os, sys, tempfile, torch, torch.distributed as dist
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
dist.init_process_group("gloo")
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, LlamaConfig
from align.train_common import full_state_dict
cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=True)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(cfg)
before = {k: v.clone() for k, v in model.state_dict().items()}
assert full_state_dict(model) is None  # an ordinary model saves itself
for layer in model.model.layers:
    fully_shard(layer)
fully_shard(model)
out = tempfile.mkdtemp()
try:
    model.save_pretrained(out + "/plain")
    print("plain save worked")
except RuntimeError as err:
    print("plain save failed:", err)
model.save_pretrained(out + "/gathered", state_dict=full_state_dict(model))
back = AutoModelForCausalLM.from_pretrained(out + "/gathered").state_dict()
print("identical" if all(torch.equal(back[k], v) for k, v in before.items()) else "different")
dist.destroy_process_group()
"""


def _run_one_process_group(tmp_path, script: str, *args) -> str:
    """`script` as one gloo process (rank 0 of 1, a free port as argv[1], then `args`) -> its stdout."""
    import os
    import subprocess
    import sys

    from prefloop.net import free_port

    port = free_port()
    path = tmp_path / "one_process_group.py"
    path.write_text(script)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(path), str(port), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_final_save_gathers_fsdp2_shards(tmp_path):
    """FSDP2 (fully_shard: DTensor parameters, one process over gloo) breaks save_pretrained, as seen on an
    H200 under configs/accelerate_fsdp.yaml; save_final's full_state_dict gathers the weights whole."""
    stdout = _run_one_process_group(tmp_path, FSDP_SAVE)
    assert "plain save failed" in stdout and "identical" in stdout


FSDP_ONPOLICY = """
import os, sys, torch, torch.distributed as dist
from types import SimpleNamespace
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
dist.init_process_group("gloo")
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from align.onpolicy.critic import ActorCritic
from align.onpolicy.rollout import micro_batch
from align.onpolicy.toolkit import load_policy_pair
cfg = SimpleNamespace(model=sys.argv[2], lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                      lora_target_modules=["q_proj", "v_proj"], lora_targets=lambda: ["q_proj", "v_proj"], seed=0)
pair = load_policy_pair(cfg)
plain_lora = {k: v.clone() for k, v in pair.policy.state_dict().items() if "lora_" in k}
prompts = ["a b c", "tell me about rivers, please"]
torch.manual_seed(0)
plain = pair.sample(prompts, 1, 4, 1.0)  # the numbers before sharding
ref_plain = pair.logprobs(plain, 1.0, reference=True)
root = ActorCritic(pair.policy)  # what align ppo prepares: accelerate's FSDP2 shards each layer, then the root
for layer in pair.policy.get_base_model().model.layers:
    fully_shard(layer)
fully_shard(root)
try:
    pair.sample(prompts, 1, 4, 1.0)
    print("ungathered sample worked")
except Exception as err:
    print("ungathered sample failed:", str(err)[:80])
pair.root = root
torch.manual_seed(0)
rollout = pair.sample(prompts, 1, 4, 1.0)
print("tokens", "same" if torch.equal(rollout.response_ids, plain.response_ids) else "different")
ref = pair.logprobs(rollout, 1.0, reference=True)
print("reference", "same" if torch.allclose(ref, ref_plain, atol=1e-5) else "different")
embed = pair.policy.get_base_model().model.embed_tokens.weight  # sharded again once the pass is over
print("resharded" if isinstance(embed, DTensor) else "left gathered")
mb = micro_batch(rollout, torch.arange(len(rollout)))
logits, values = root(mb["input_ids"], mb["attention_mask"], mb["response_start"], 1.0)
print("values", values.dtype, "finite", bool(torch.isfinite(values).all()))
# the final save of a LoRA policy under FSDP (align.train_common.save_final): the adapter, gathered whole
import tempfile
from peft import PeftModel
from transformers import AutoModelForCausalLM
from align.train_common import full_state_dict
lora = {k: v.clone() for k, v in plain_lora.items()}
out = tempfile.mkdtemp()
pair.policy.save_pretrained(out, state_dict=full_state_dict(pair.policy))
back = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sys.argv[2]), out).state_dict()
same = all(torch.equal(back[k], v) for k, v in lora.items())
print("adapter", "same" if same and len(lora) == 8 else f"different ({len(lora)} tensors)")
dist.destroy_process_group()
"""


def test_ppo_sampling_and_reference_under_fsdp2_gather_the_root(tmp_path, tiny_model_dir):
    """Under configs/accelerate_fsdp.yaml `align ppo` failed in its first sample on an H200: generate and pi_ref's
    pass call the policy below the FSDP2 root (PPO's ActorCritic), whose own weights (the embedding) stayed
    sharded. onpolicy.root_gathered gathers them; the sample and pi_ref match the unsharded model's, and the
    final save (the LoRA adapter, gathered from the shards) loads back with the same weights."""
    stdout = _run_one_process_group(tmp_path, FSDP_ONPOLICY, tiny_model_dir)
    lines = stdout.splitlines()
    assert any(line.startswith("ungathered sample failed: aten.embedding") for line in lines), stdout
    assert {"tokens same", "reference same", "values torch.float32 finite True", "resharded",
            "adapter same"} <= set(lines), stdout


@pytest.mark.parametrize("env, engine", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_no_on_policy_trainer_refuses_a_sharded_engine(monkeypatch, env, engine):
    """On a GPU accelerate turns FSDP or DeepSpeed on (stood in for here): every on-policy trainer trains through
    the module accelerate prepared, so none refuses either (tests/test_onpolicy_engines.py runs them all under
    FSDP2 and ZeRO-2/3); before the shared loop, online DPO and GRPO/RLOO averaged gradients by hand and
    refused both, PPO refused DeepSpeed."""
    from align.onpolicy.toolkit import refuse_sharded_engines
    from prefloop import hardware

    monkeypatch.setenv(env, "true")
    monkeypatch.setattr(hardware, "detect", lambda: hardware.Hardware("cuda", 1, True, True, 16, 140.0))
    for command in ("align ppo", "align online-dpo", "align grpo", "align rloo"):
        refuse_sharded_engines(command)  # no error
