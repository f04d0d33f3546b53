"""`reward-model train` configuration: one dataclass, YAML + flag overrides (prefloop.config)."""

from __future__ import annotations

from dataclasses import dataclass

from prefloop.config import check_ranges
from prefloop.config import config_field as _f
from prefloop.data import check_test_fraction
from prefloop.metrics import report_to_field
from prefloop.models import DEFAULT_MODEL


@dataclass
class RewardModelConfig:
    """Train a Bradley-Terry reward model r(x, y) on pairwise / ranking comparisons."""

    # Data
    data: str | None = _f(None, "pairwise or ranking export file (.jsonl/.csv/.parquet/datasets dir)")
    store: str | None = _f(None, "read the preference store directly: SQLAlchemy URL (with --project)")
    project: str | None = _f(None, "labeling project to snapshot from --store")
    eval_data: str | None = _f(None, "held-out comparisons; default: the export's X.test.jsonl beside --data "
                                     "X.train.jsonl (the training data is never split again)")
    test_fraction: float = _f(0.0, "--store only: share of prompts held out, the same split as "
                                   "`labeling export --test-fraction`", range="[0, 1)")
    split_seed: int = _f(0, "--store only: the split's seed (`labeling export --seed`)", range="seed")
    # Model
    model: str = _f(DEFAULT_MODEL, "backbone r_θ: decoder or encoder; embedded name, HF id or local dir")
    output_dir: str = _f("runs/reward_model", "the run: final/ (the model), checkpoints/, data/ (the snapshot), "
                                              "metrics.jsonl, tensorboard/, run.json")
    n_heads: int = _f(1, "ensemble size H: linear heads on one backbone, giving mean and std of r", range=">= 1")
    bootstrap: bool = _f(True, "each ensemble head sees its own Poisson(1) bootstrap weights of the data")
    lora: bool = _f(False, "train LoRA adapters (Hu et al. 2021) + the head instead of all weights")
    lora_r: int = _f(16, "LoRA rank r", range=">= 1")
    lora_alpha: int = _f(32, "LoRA scaling α", range=">= 1")
    lora_dropout: float = _f(0.0, "LoRA dropout", range="[0, 1)")
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
    seed: int = _f(42, "seed for head initialisation, data order, split and bootstrap", range="seed")
    # Normalisation, logging, checkpoints
    normalize_samples: int = _f(512, "responses in the reference sample that fixes offset/scale (mean 0, std 1)",
                                range=">= 2")
    logging_steps: int = _f(10, "log metrics every N steps", range=">= 1")
    eval_steps: int = _f(50, "held-out evaluation every N steps (accuracy vs training pairs)", range=">= 1")
    save_steps: int = _f(100, "checkpoint every N steps", range=">= 1")
    save_total_limit: int = _f(2, "checkpoints kept", range=">= 1")
    resume: bool = _f(False, "continue the run in output_dir from its last checkpoint (without it, an "
                             "output_dir holding a run is refused)")
    scoring_batch_size: int = _f(16, "batch size for normalisation and scoring", range=">= 1")
    report_to: list[str] = report_to_field()

    def __post_init__(self):
        if (self.data is None) == (self.store is None):
            raise ValueError("give exactly one of --data FILE or --store URL --project NAME")
        if self.store is not None and not self.project:
            raise ValueError("--store needs --project NAME")
        check_test_fraction(self.test_fraction, self.store)
        check_ranges(self)  # normalize_samples >= 2: a standard deviation needs two responses
