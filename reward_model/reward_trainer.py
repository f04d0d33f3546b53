"""`reward-model train`: TRL's RewardTrainer, extended with ties, rankings, ensembles and normalisation.

What TRL's RewardTrainer gives us unchanged: model set-up (PEFT/LoRA wrapping, dropout off,
pad token), the transformers Trainer loop (tqdm progress, optimiser, checkpoints, resume)
and its metric averaging. What it lacks and this subclass adds: comparison *groups* (pairs
with margins and ties, K-way rankings) tokenized exactly like RewardScorer reads them, the
losses of reward_model.losses, H ensemble heads with bootstrap weights, and, after training,
reward normalisation and a directory that plain transformers loads.

    reward-model train --config configs/reward_model.yaml --data pairs.jsonl --output-dir runs/rm
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from trl import RewardConfig, RewardTrainer

from prefloop.config import parse_config, to_dict
from prefloop.hf import JsonlMetricsCallback, hardware_training_args
from reward_model import losses as L
from reward_model.encoding import encode, pad_right
from reward_model.reward_config import RewardModelConfig


# ---------------------------------------------------------------------------- data -> tensors

def tokenize_groups(groups: list[dict], tokenizer, max_length: int, n_heads: int = 1,
                    bootstrap: bool = True, seed: int = 0):
    """datasets.Dataset of tokenized comparison groups (best first), one row per group.

    `weight` (H,) holds each ensemble head's Poisson(1) bootstrap count of the row
    (Osband et al. 2016; Coste et al. 2023 for reward ensembles): heads that see different
    resamples of the data disagree where the data is thin. A single head weighs every row 1.
    """
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    if n_heads > 1 and bootstrap:
        weights = torch.poisson(torch.ones(len(groups), n_heads), generator=g)  # (N, H)
    else:
        weights = torch.ones(len(groups), n_heads)
    rows = []
    for group, weight in zip(groups, weights.tolist()):
        ids = [encode(tokenizer, group["prompt"], r, max_length) for r in group["responses"]]
        rows.append({"group_ids": ids, "margin": group["margin"], "tie": group["tie"], "weight": weight,
                     "length": max(len(x) for x in ids) * len(ids)})
    return Dataset.from_list(rows)


@dataclass
class GroupCollator:
    """Flattens B groups into one right-padded batch of N = Σ K_b sequences (one forward pass)."""

    pad_token_id: int

    def __call__(self, examples: list[dict]) -> dict:
        sequences = [ids for ex in examples for ids in ex["group_ids"]]
        input_ids, attention_mask = pad_right(sequences, self.pad_token_id)  # (N, T)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "group_sizes": torch.tensor([len(ex["group_ids"]) for ex in examples]),  # (B,)
                "margin": torch.tensor([float(ex["margin"]) for ex in examples]),  # (B,)
                "tie": torch.tensor([bool(ex["tie"]) for ex in examples]),  # (B,)
                "weight": torch.tensor([ex["weight"] for ex in examples], dtype=torch.float32)}  # (B, H)


def to_groups(flat: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H) rewards -> (B, K_max, H) best first, and the (B, K_max) mask of real entries."""
    from torch.nn.utils.rnn import pad_sequence

    rewards = pad_sequence(list(torch.split(flat, sizes.tolist())), batch_first=True)  # (B, K, H)
    mask = torch.arange(rewards.shape[1], device=flat.device).unsqueeze(0) < sizes.unsqueeze(1)  # (B, K)
    return rewards, mask


def pairwise_accuracy(rewards: torch.Tensor, mask: torch.Tensor, tie: torch.Tensor) -> torch.Tensor:
    """Fraction of strict (non-tie) ordered pairs i < j that the rewards (B, K) order correctly; = counts ½."""
    delta = rewards.unsqueeze(-1) - rewards.unsqueeze(-2)  # (B, K, K)
    k = rewards.shape[-1]
    upper = torch.ones(k, k, dtype=torch.bool, device=rewards.device).triu(diagonal=1)
    valid = upper & mask.unsqueeze(-1) & mask.unsqueeze(-2) & ~tie.view(-1, 1, 1)  # (B, K, K)
    correct = (delta > 0).float() + 0.5 * (delta == 0).float()
    return (correct * valid).sum() / valid.sum().clamp_min(1)


# ---------------------------------------------------------------------------- the trainer

class PreferenceRewardTrainer(RewardTrainer):
    """RewardTrainer whose batches are comparison groups and whose loss comes from reward_model.losses."""

    def __init__(self, *args, rm_config: RewardModelConfig, **kwargs):
        self.rm_config = rm_config
        model = kwargs["model"]
        with _single_head_view(model):
            super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset  # tokenized by tokenize_groups, with the same `encode` RewardScorer uses

    def _set_signature_columns_if_needed(self):
        # Keep our columns through Trainer's unused-column removal (`length` feeds group_by_length).
        self._signature_columns = ["group_ids", "margin", "tie", "weight", "length"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        cfg, mode = self.rm_config, "train" if model.training else "eval"
        # 1. one forward pass over every response of every group
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       use_cache=False).logits.float()  # (N, H)
        rewards, mask = to_groups(logits, inputs["group_sizes"])  # (B, K, H), (B, K)
        margin = inputs["margin"] * cfg.margin_scale if cfg.use_margin else torch.zeros_like(inputs["margin"])
        # 2. loss of every group under every head, weighted by the heads' bootstrap counts
        per_head = torch.stack([L.group_loss(rewards[..., h], mask, margin, inputs["tie"], cfg.ranking_loss)
                                for h in range(rewards.shape[-1])], dim=-1)  # (B, H)
        weight = inputs["weight"]  # (B, H)
        loss = ((per_head * weight).sum(0) / weight.sum(0).clamp_min(1e-8)).mean()
        # 3. optional reward centering, λ (Σ_k r_k)²
        if cfg.center_rewards_coefficient:
            centering = torch.stack([L.reward_centering(rewards[..., h], mask) for h in range(rewards.shape[-1])])
            loss = loss + cfg.center_rewards_coefficient * centering.mean()
        # 4. diagnostics on the ensemble mean, without gradients, averaged over processes (one gather)
        with torch.no_grad():
            mean = rewards.mean(-1)  # (B, K)
            diagnostics = {"accuracy": pairwise_accuracy(mean, mask, inputs["tie"]),
                           "margin": (mean[:, 0] - mean[:, 1]).mean(), "mean_reward": mean[mask].mean(),
                           "bt_loss": per_head.mean()}
            if rewards.shape[-1] > 1:
                diagnostics["head_std"] = rewards.std(-1)[mask].mean()
            values = self.accelerator.gather(torch.stack(list(diagnostics.values()))[None])  # (processes, M)
            for name, value in zip(diagnostics, values.mean(0).tolist()):
                self._metrics[mode][name].append(value)
        return (loss, {"rewards": mean}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # x-axis of the learning curve: comparisons consumed so far (= distinct pairs in epoch 1)
        args = self.args
        logs["comparisons_seen"] = (self.state.global_step * args.per_device_train_batch_size
                                    * args.gradient_accumulation_steps * args.world_size)
        super().log(logs, start_time)


@contextlib.contextmanager
def _single_head_view(model):
    """TRL checks num_labels == 1; H ensemble heads are H independent scalar rewards that the rest of
    TRL handles unchanged, so the check sees one label and the model keeps its H."""
    heads = model.config.num_labels
    model.config.num_labels = 1
    try:
        yield
    finally:
        model.config.num_labels = heads


# ---------------------------------------------------------------------------- the command

def prepare_data(cfg: RewardModelConfig, data_dir: Path, resuming: bool):
    """(train groups, eval groups, source metadata), validated; nothing is written here.

    The held-out comparisons are the export's own: --eval-data, the X.test.jsonl beside --data
    X.train.jsonl, or (--store) labeling's split by prompt; the training data is never split again.
    A resumed run reuses its own snapshot in data_dir, so that judgments added to the store
    since the first start do not change the data under a half-trained model.
    """
    from prefloop.data import read_records, test_companion
    from reward_model.data import check_trainable, groups_from_records, load_groups

    if resuming and (data_dir / "source.json").exists():
        train = groups_from_records(read_records(data_dir / "train.jsonl"), str(data_dir / "train.jsonl"))
        evals = groups_from_records(read_records(data_dir / "eval.jsonl"), str(data_dir / "eval.jsonl"))
        return train, evals, json.loads((data_dir / "source.json").read_text())
    evals = None
    if cfg.store:
        from labeling.store_rows import rows_from_store

        # ties are kept (half a win each); ranking projects export full rankings (Plackett-Luce)
        splits, snapshot = rows_from_store(cfg.store, cfg.project, test_fraction=cfg.test_fraction,
                                           seed=cfg.split_seed, ties="keep")
        source_name, source = f"store project {cfg.project}", {"store_snapshot": snapshot}
        groups = groups_from_records(splits["train"], source_name)
        evals = groups_from_records(splits.get("test", []), f"{source_name} (test split)")
    else:
        source_name, source = cfg.data, {"file": str(Path(cfg.data).resolve())}
        groups = load_groups(cfg.data)
    check_trainable(groups, source_name)
    eval_file = cfg.eval_data or (test_companion(cfg.data) if cfg.data else None)
    if eval_file:
        evals, source["eval_file"] = load_groups(eval_file), str(eval_file)
    evals = evals or []
    source.update(n_train=len(groups), n_eval=len(evals), n_ties=sum(g["tie"] for g in groups),
                  n_rankings=sum(len(g["responses"]) > 2 for g in groups))
    return groups, evals, source


def write_data_snapshot(data_dir: Path, train: list[dict], evals: list[dict], source: dict) -> None:
    """The exact comparisons this model is trained and evaluated on (eval reads data/eval.jsonl)."""
    from prefloop.data import write_records

    write_records([g["row"] for g in train], data_dir / "train.jsonl")
    write_records([g["row"] for g in evals], data_dir / "eval.jsonl")
    (data_dir / "source.json").write_text(json.dumps(source, indent=2))


def reference_sample(groups: list[dict], n: int, seed: int) -> tuple[list, list]:
    """(prompts, responses): up to n training responses, the sample that fixes mean 0 / std 1."""
    pairs = [(g["prompt"], r) for g in groups for r in g["responses"]]
    random.Random(seed).shuffle(pairs)
    pairs = pairs[:n]
    return [p for p, _ in pairs], [r for _, r in pairs]


def training_arguments(cfg: RewardModelConfig, run, has_eval: bool) -> RewardConfig:
    return RewardConfig(
        output_dir=str(run.checkpoints_dir),
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.num_train_epochs, seed=cfg.seed,
        max_steps=-1 if cfg.max_steps is None else cfg.max_steps,  # transformers' -1: num_train_epochs
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if has_eval else "no", eval_steps=cfg.eval_steps,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        prediction_loss_only=True, report_to="none", max_length=None,  # metrics: prefloop.hf's callback
        **hardware_training_args(cfg.gradient_checkpointing, run.precision),  # the run's precision
    )


def lora_config(cfg: RewardModelConfig):
    from peft import LoraConfig

    # task SEQ_CLS makes PEFT train and save the new reward head (`score` / `classifier`) in full.
    return LoraConfig(task_type="SEQ_CLS", r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=cfg.lora_targets())


def train(cfg: RewardModelConfig, callbacks: list | None = None) -> Path:
    """Train, normalise and save; returns the model directory (OUT/final, see prefloop.run).

    `callbacks`: extra transformers TrainerCallbacks (the benchmark times steps with one).
    """
    from prefloop import distributed
    from prefloop.run import lineage, start_run
    from reward_model.backbone import load_backbone

    # 1. the run directory (the resume rule) and the data, validated before anything is written
    run = start_run(cfg.output_dir, "reward-model train", to_dict(cfg), cfg.resume)
    last = run.last_checkpoint()
    data_dir = run.dir / "data"
    train_groups, eval_groups, source = prepare_data(cfg, data_dir, resuming=last is not None)
    # 2. backbone with H heads, data tokenized the way RewardScorer will read it
    model, tokenizer = load_backbone(cfg.model, n_heads=cfg.n_heads, seed=cfg.seed)
    # encoders have a fixed number of positions; decoders' max_position_embeddings is large
    max_length = min(cfg.max_length, getattr(model.config, "max_position_embeddings", None) or cfg.max_length)
    train_ds = tokenize_groups(train_groups, tokenizer, max_length, cfg.n_heads, cfg.bootstrap, cfg.seed)
    eval_ds = tokenize_groups(eval_groups, tokenizer, max_length) if eval_groups else None
    if last is None and run.main:
        write_data_snapshot(data_dir, train_groups, eval_groups, source)
    run.save(**lineage(cfg.model), data=source)
    # 3. train (resuming from the last checkpoint when there is one)
    logger = run.metrics_logger()
    trainer = PreferenceRewardTrainer(
        model=model, args=training_arguments(cfg, run, eval_ds is not None), train_dataset=train_ds,
        eval_dataset=eval_ds, processing_class=tokenizer, data_collator=GroupCollator(tokenizer.pad_token_id),
        peft_config=lora_config(cfg) if cfg.lora else None,
        callbacks=[JsonlMetricsCallback(logger), *(callbacks or [])], rm_config=cfg)
    if last:
        print(f"[reward-model] resuming from {last}")
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    metrics = {"train_loss": result.training_loss, "train_runtime_s": result.metrics.get("train_runtime")}
    if eval_ds is not None:
        metrics.update({k: v for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
    logger.close()
    # 4. drop the mixed-precision forward wrapper accelerate put on the model, and merge LoRA into the
    #    backbone so that plain transformers loads the result
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    model = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    distributed.check_replicas_agree(model)
    if run.main:  # several processes: the main one normalises and writes, the others wait for it
        finish(cfg, run, model, tokenizer, train_groups, max_length, source, metrics)
    distributed.wait_for_everyone()
    return run.final_dir


def finish(cfg: RewardModelConfig, run, model, tokenizer, train_groups: list[dict], max_length: int,
           source: dict, metrics: dict) -> None:
    """Normalise the trained model's rewards and write OUT/final (steps 5 and 6 of `train`)."""
    from reward_model.artifact import save_reward_model
    from reward_model.scorer import RewardScorer

    # 5. normalise to mean 0 / std 1 on a reference sample of training responses
    scorer = RewardScorer(model, tokenizer, batch_size=cfg.scoring_batch_size, max_length=max_length)
    offset, scale = scorer.fit_normalisation(*reference_sample(train_groups, cfg.normalize_samples, cfg.seed))
    # 6. save the model directory (reward_model.json: what a scorer needs, and where it came from)
    from prefloop.hardware import detect

    metadata = {"base_model": cfg.model, "trained": True, "precision": run.precision, "hardware": detect().describe(),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "config": to_dict(cfg), "max_length": max_length, "data": source, "metrics": metrics,
                "normalisation": {"n_reference": min(cfg.normalize_samples, sum(len(g["responses"]) for g in train_groups)),
                                  "sample": "training responses"},
                "reward_offset": offset, "reward_scale": scale}
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    save_reward_model(model, tokenizer, run.final_dir, metadata)
    run.save(status="finished", metrics=metrics)


def main(argv: list[str]) -> int:
    cfg = parse_config(RewardModelConfig, argv, prog="reward-model train")
    out = train(cfg)
    meta = json.loads((out / "reward_model.json").read_text())
    acc = meta["metrics"].get("eval_accuracy")
    print(f"[reward-model] saved {out}" + (f"; held-out accuracy {acc:.3f}" if acc is not None else ""))
    return 0
