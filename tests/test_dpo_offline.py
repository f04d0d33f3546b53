"""`align dpo` offline: the trainer's loss against a plain forward pass, end-to-end runs on the tiny model
(full fine-tuning with resume, LoRA, precomputed reference), the store as input, and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from align.offline.dpo_config import DPOConfig
from align.offline.dpo_trainer import train_offline
from dpo_helpers import TOPICS, load_weights, pair_row, write_jsonl
from prefloop.config import ConfigError, parse_config
from prefloop.errors import InputError
from prefloop.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("tiny_cpu")  # fp32, one thread (conftest)


@pytest.fixture
def pairs_file(tmp_path):
    """pairs.train.jsonl (24 prompts) beside pairs.test.jsonl (6), as `labeling export --test-fraction` writes."""
    # strength 2 ("much better") for every third pair: margins differ across the batch
    rows = [pair_row(t, margin=2.0 if i % 3 == 0 else 1.0) for i, t in enumerate(TOPICS)]
    write_jsonl(rows[24:], tmp_path / "pairs.test.jsonl")
    return write_jsonl(rows[:24], tmp_path / "pairs.train.jsonl")


def _cfg(tiny_model_dir, data, out, *extra) -> DPOConfig:
    return parse_config(DPOConfig, ["--model", tiny_model_dir, "--data", str(data), "--output-dir", str(out),
                                    "--learning-rate", "1e-3", "--per-device-train-batch-size", "4",
                                    "--logging-steps", "2", "--save-steps", "3", "--max-length", "128", *extra])


def _plain_sequence_logps(model, batch) -> torch.Tensor:
    """Σ_t log π(y_t) over response tokens from an ordinary forward pass and log_softmax. -> (2B,)"""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return (logp * batch["completion_mask"][:, 1:]).sum(1)


def _trainer_on_four_pairs(tiny_model_dir, pairs_file, tmp_path, precompute: bool = False, peft=None):
    """A `PrefloopDPOTrainer` (β 0.1, sigmoid loss, fp32) on the tiny model and the first 4 training pairs:
    -> (trainer, rows)."""
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig

    from align.offline.dpo_trainer import PairCollator, PrefloopDPOTrainer
    from align.offline.preference_data import load_pairwise
    from prefloop.models import load_causal_lm

    torch.manual_seed(0)
    rows = load_pairwise(_cfg(tiny_model_dir, pairs_file, tmp_path / "out")).rows[:4]
    model, tokenizer = load_causal_lm(tiny_model_dir, dtype=torch.float32)
    args = TRLDPOConfig(output_dir=str(tmp_path / "out"), beta=0.1, report_to=[], per_device_train_batch_size=4,
                        precompute_ref_log_probs=precompute, bf16=False, gradient_checkpointing=False, use_cpu=True)
    trainer = PrefloopDPOTrainer(model=model, args=args, processing_class=tokenizer, peft_config=peft,
                                 data_collator=PairCollator(pad_token_id=tokenizer.pad_token_id),
                                 train_dataset=Dataset.from_list(rows), loss_type="sigmoid", margin_scale=1.0)
    return trainer, rows


@pytest.mark.parametrize("precompute", [False, True])
def test_trainer_loss_equals_the_dpo_formula_on_plain_log_probs(tiny_model_dir, pairs_file, tmp_path, precompute):
    """The fused log-prob head, masking, reference handling and margins give exactly −log σ(β·h − Δ)."""
    from prefloop.models import load_causal_lm

    trainer, rows = _trainer_on_four_pairs(tiny_model_dir, pairs_file, tmp_path, precompute=precompute)
    # π_ref is the initial policy: kept as a frozen copy, or, when precomputed, not kept at all
    assert (trainer.ref_model is None) == precompute
    with torch.no_grad():  # move the policy away from π_ref so that h ≠ 0
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch).item()

    reference, _ = load_causal_lm(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        logps, ref_logps = _plain_sequence_logps(trainer.model, batch), _plain_sequence_logps(reference, batch)
    h = [(c - rc) - (r - rr) for c, r, rc, rr in zip(*logps.chunk(2), *ref_logps.chunk(2))]
    margins = [row["margin"] for row in rows]
    assert margins == [2.0, 1.0, 1.0, 2.0]
    expected = sum(math.log1p(math.exp(-(0.1 * float(hi) - m))) for hi, m in zip(h, margins)) / 4
    assert abs(float(h[0])) > 1e-3
    assert loss == pytest.approx(expected, rel=1e-4)


def _plain_kl(logits: torch.Tensor, ref_logits: torch.Tensor, batch) -> torch.Tensor:
    """Σ_t KL(π_θ ‖ π_ref) over response positions from two models' full logits, in float64. -> (2B,)"""
    logp, ref_logp = torch.log_softmax(logits[:, :-1].double(), -1), torch.log_softmax(ref_logits[:, :-1].double(), -1)
    return ((logp.exp() * (logp - ref_logp)).sum(-1) * batch["completion_mask"][:, 1:]).sum(1)


@pytest.mark.parametrize("lora", [False, True], ids=["frozen copy", "adapter-disabled base"])
def test_held_out_kl_is_the_exact_kl_from_the_loss_passes_alone(tiny_model_dir, pairs_file, tmp_path, lora):
    """The evaluation's KL comes from the hidden states of the loss's own two passes (policy, reference), with
    no further pass through either body, and equals Σ_t KL(π_θ ‖ π_ref) of plain forward passes in float64:
    against a frozen copy (full fine-tuning) and against the base with the adapter disabled (LoRA)."""
    from peft import LoraConfig

    peft = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]) if lora else None
    trainer, _ = _trainer_on_four_pairs(tiny_model_dir, pairs_file, tmp_path, peft=peft)
    with torch.no_grad():  # move the policy away from π_ref
        for p in trainer.model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    bodies = [trainer.model.get_base_model().model] if lora else [trainer.model.model, trainer.ref_model.model]
    passes = []
    hooks = [b.register_forward_hook(lambda *_: passes.append(1)) for b in bodies]
    trainer.model.eval()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, batch)
    for hook in hooks:
        hook.remove()
    kl = trainer._metrics["eval"]["kl"][-1]
    assert len(passes) == 2  # the policy's pass and the reference's, nothing per row

    with torch.no_grad():
        ids = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits = trainer.model(**ids).logits
        if lora:
            with trainer.model.disable_adapter():
                ref_logits = trainer.model(**ids).logits
        else:
            ref_logits = trainer.ref_model(**ids).logits
    expected = _plain_kl(logits, ref_logits, batch).mean().item()
    assert expected > 1e-3
    assert kl == pytest.approx(expected, rel=1e-4)


def test_offline_dpo_end_to_end_then_resume(tiny_model_dir, pairs_file, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "run"
    final = train_offline(_cfg(tiny_model_dir, pairs_file, out, "--max-steps", "6"))

    # parameters changed, and the saved policy loads with plain transformers
    base, trained = load_weights(tiny_model_dir), load_weights(final)
    assert all(not torch.equal(base[k], trained[k]) for k in base)
    meta = json.loads((out / "run.json").read_text())
    before, after = meta["eval_before"], meta["eval_after"]
    # held-out preference accuracy (implicit reward of y_w above y_l) rose; the loss fell; KL grew from 0
    assert before["eval_rewards/accuracies"] == 0.0  # π_θ = π_ref: every held-out pair is a tie
    assert after["eval_rewards/accuracies"] >= 0.8
    assert after["eval_loss"] < before["eval_loss"]
    assert before["eval_kl"] == pytest.approx(0.0, abs=1e-6) and after["eval_kl"] > 0
    assert meta["data"]["kind"] == "file" and meta["train_pairs"] == 24 and meta["eval_pairs"] == 6
    logged = read_metrics(out)
    assert {"rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"} <= set(logged[-3])
    assert (out / "tensorboard").is_dir()
    assert [row["step"] for row in logged] == sorted({row["step"] for row in logged})  # one row per step

    # resume: continues from checkpoint-6 to step 8 instead of starting over
    with pytest.raises(InputError, match="pass --resume"):  # an existing run is never overwritten
        train_offline(_cfg(tiny_model_dir, pairs_file, out, "--max-steps", "8"))
    train_offline(_cfg(tiny_model_dir, pairs_file, out, "--max-steps", "8", "--resume"))
    steps = [row["step"] for row in read_metrics(out) if "loss" in row]
    assert max(steps) == 8 and steps.count(1) == 1  # a fresh start would have logged step 1 again
    state = json.loads((out / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8


def test_offline_dpo_with_lora_uses_the_adapter_disabled_base_as_reference(tiny_model_dir, pairs_file, tmp_path):
    torch.manual_seed(0)
    final = train_offline(_cfg(tiny_model_dir, pairs_file, tmp_path / "lora", "--lora", "--lora-r", "8",
                               "--learning-rate", "1e-2", "--max-steps", "6", "--loss-type", "ipo"))
    meta = json.loads((tmp_path / "lora" / "run.json").read_text())
    assert meta["eval_before"]["eval_rewards/accuracies"] == 0.0
    assert meta["eval_after"]["eval_rewards/accuracies"] >= 0.8
    assert meta["eval_after"]["eval_kl"] > 0  # measured against the adapter-disabled base
    # merged: a plain model whose attention/MLP weights moved; the embeddings (no adapter) did not
    assert not (final / "adapter_config.json").exists()
    base, trained = load_weights(tiny_model_dir), load_weights(final)
    assert not torch.equal(base["model.layers.0.self_attn.q_proj.weight"],
                           trained["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(base["model.embed_tokens.weight"], trained["model.embed_tokens.weight"])


def test_offline_dpo_reads_the_store_directly_and_records_the_snapshot(tiny_model_dir, sqlite_url, tmp_path):
    from labeling.db import open_store
    from export_store import build_pairwise_store

    engine = open_store(sqlite_url)
    build_pairwise_store(engine)
    engine.dispose()
    torch.manual_seed(0)
    cfg = parse_config(DPOConfig, ["--model", tiny_model_dir, "--store", sqlite_url, "--project", "p",
                                   "--output-dir", str(tmp_path / "store"), "--max-steps", "1",
                                   "--per-device-train-batch-size", "2", "--learning-rate", "1e-3"])
    final = train_offline(cfg)
    meta = json.loads((tmp_path / "store" / "run.json").read_text())
    data = meta["data"]
    assert data["kind"] == "store" and data["project"] == "p" and data["records"] == 3
    assert data["judgments"] == 19 and data["max_judgment_id"] == 19 and data["taken_at"]
    before, after = load_weights(tiny_model_dir), load_weights(final)
    assert not torch.equal(before["model.norm.weight"], after["model.norm.weight"])


@pytest.mark.parametrize("rows, message", [
    ([pair_row("cats"), {"prompt": "hi", "chosen": "a"}], "pairs.jsonl: row 2: missing field 'rejected'"),
    ([{**pair_row("cats"), "margin": "big"}], "row 1: field 'margin': expected a number"),
    ([{**pair_row("cats"), "chosen": [{"role": "robot", "content": "x"}]}], "row 1: field 'chosen'"),
    ([{**pair_row("cats"), "tie": True}], "no usable preference pairs (1 tie rows skipped)"),
    ([], "no usable preference pairs"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny_model_dir, tmp_path, capsys, rows, message):
    from align.cli import main

    data = write_jsonl(rows, tmp_path / "pairs.jsonl")
    out = tmp_path / "never"
    assert main(["dpo", "--model", tiny_model_dir, "--data", str(data), "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_bad_config_and_missing_model(tiny_model_dir, pairs_file, tmp_path, capsys):
    from align.cli import main

    online, offline = ["online-dpo", "--prompts", str(pairs_file)], ["dpo", "--data", str(pairs_file)]
    for argv, message in [([*offline, "--label-smoothing", "0.1"], "label_smoothing is only used by"),
                          ([*offline, "--beta", "0"], "beta must be > 0"),
                          (online, "reward_model is required"),
                          ([*online, "--reward-model", "x:y", "--num-generations", "1"], "num_generations must be"),
                          ([*offline, "--model", str(tmp_path / "nope")], "no such directory")]:
        argv = [*argv[:1], "--output-dir", str(tmp_path / "o"), "--model", tiny_model_dir, *argv[1:]]
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError):
        parse_config(DPOConfig, ["--loss-type", "ipo", "--label-smoothing", "0.2"])


def test_shipped_configs_parse():
    from align.offline.sft_config import SFTConfig
    from align.onpolicy.online_dpo_config import OnlineDPOConfig

    offline = parse_config(DPOConfig, ["--config", "dpo"])
    online = parse_config(OnlineDPOConfig, ["--config", "dpo_online"])
    sft = parse_config(SFTConfig, ["--config", "sft"])
    assert online.num_generations == 4
    assert sft.completion_only_loss and offline.loss_type == "sigmoid"
