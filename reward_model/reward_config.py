"""`reward-model train` configuration: one dataclass, YAML + flag overrides (prefloop.config)."""

from __future__ import annotations

from dataclasses import dataclass

from prefloop.config import check_ranges
from prefloop.config import config_field as _f
from prefloop.fields import LoraFields, RunFields, StoreFields
from prefloop.models import DEFAULT_MODEL


@dataclass
class RewardModelConfig(RunFields, LoraFields, StoreFields):
    """Train a Bradley-Terry reward model r(x, y) on pairwise / ranking comparisons."""

    # Data
    data: str | None = _f(None, "pairwise or ranking export file (.jsonl/.csv/.parquet/datasets dir)")
    eval_data: str | None = _f(None, "held-out comparisons; default: the export's X.test.jsonl beside --data "
                                     "X.train.jsonl (the training data is never split again)")
    # Model
    model: str = _f(DEFAULT_MODEL, "backbone r_θ: decoder or encoder; embedded name, HF id or local dir")
    output_dir: str = _f("runs/reward_model", "the run: final/ (the model), checkpoints/, data/ (the snapshot), "
                                              "metrics.jsonl, tensorboard/, run.json")
    n_heads: int = _f(1, "ensemble size H: linear heads on one backbone, giving mean and std of r", range=">= 1")
    bootstrap: bool = _f(True, "each ensemble head sees its own Poisson(1) bootstrap weights of the data")
    max_length: int = _f(1024, "max tokens of prompt + response; longer inputs keep their first token and end",
                         range=">= 8")
    # Loss
    ranking_loss: str = _f("plackett_luce", "loss for K>=3 rankings (pairs always use Bradley-Terry)",
                           choices=["plackett_luce", "all_pairs"])
    use_margin: bool = _f(True, "subtract the judged-strength margin m in −log σ(r_c − r_r − m) (Llama 2 Eq. 2)")
    margin_scale: float = _f(1.0, "multiplier on the export's margin m", range=">= 0")
    center_rewards_coefficient: float = _f(0.0, "reward-centering λ·(r_c + r_r)² (Eisenstein et al. 2023 Eq. 2)",
                                           range=">= 0")
    # Optimisation
    learning_rate: float = _f(2e-5, "AdamW learning rate η", range="> 0")
    weight_decay: float = _f(0.0, "AdamW weight decay", range=">= 0")
    warmup_steps: int = _f(0, "linear warm-up steps", range=">= 0")
    per_device_train_batch_size: int = _f(8, "comparisons per device per step", range=">= 1")
    gradient_accumulation_steps: int = _f(1, "micro-batches per optimiser step", range=">= 1")
    num_train_epochs: float = _f(1.0, "passes over the training comparisons", range="> 0")
    max_steps: int | None = _f(None, "stop after this many optimiser steps (unset: num_train_epochs passes)",
                               range=">= 1")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward: less memory, ~30% slower")
    group_by_length: bool = _f(True, "batch comparisons of similar length together (less padding)")
    # Normalisation, logging, checkpoints
    normalize_samples: int = _f(512, "responses in the reference sample that fixes offset/scale (mean 0, std 1)",
                                range=">= 2")
    logging_steps: int = _f(10, "log metrics every N steps", range=">= 1")
    eval_steps: int = _f(50, "held-out evaluation every N steps (accuracy vs training pairs)", range=">= 1")
    save_steps: int = _f(100, "checkpoint every N steps", range=">= 1")
    scoring_batch_size: int = _f(16, "batch size for normalisation and scoring", range=">= 1")

    def __post_init__(self):
        self.check_store_source("data", self.data)
        check_ranges(self)  # normalize_samples >= 2: a standard deviation needs two responses
