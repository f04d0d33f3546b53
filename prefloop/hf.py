"""Glue for transformers/TRL trainers shared by reward_model and align."""

from __future__ import annotations

from transformers import TrainerCallback

from prefloop.hardware import detect, trainer_precision_kwargs
from prefloop.metrics import MetricsLogger


class JsonlMetricsCallback(TrainerCallback):
    """Mirror every Trainer log (loss, rewards/accuracies, eval_*) into the run's metrics.jsonl and
    TensorBoard (the Trainer's own reporting is off: one writer, one place).

    It stays open past `on_train_end`, so the evaluation after training lands in the same file; the
    caller closes the logger when the run is done.
    """

    def __init__(self, logger: MetricsLogger):
        self.logger = logger

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.logger.log(state.global_step, {k: v for k, v in logs.items() if isinstance(v, (int, float))})

    def on_save(self, args, state, control, **kwargs):
        self.logger.flush()  # a checkpoint never gets ahead of the metrics it resumes after


def hardware_training_args(gradient_checkpointing: bool | None = None, precision: str | None = None) -> dict:
    """TrainingArguments overrides: the run's precision (default: the hardware's), no library default."""
    kwargs = trainer_precision_kwargs(gradient_checkpointing, precision)
    if precision is None:
        print(f"[prefloop] hardware: {detect().describe()}; gradient checkpointing "
              f"{'on' if gradient_checkpointing else 'off'}")
    return kwargs
