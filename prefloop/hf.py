"""Glue for transformers/TRL trainers shared by reward_model and align."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from prefloop.hardware import detect, trainer_precision_kwargs
from prefloop.metrics import MetricsLogger


class JsonlMetricsCallback(TrainerCallback):
    """Mirror every Trainer log (loss, rewards/accuracies, ...) into `metrics.jsonl`."""

    def __init__(self, log_dir: str | Path):
        self.logger = MetricsLogger(log_dir, tensorboard=False)  # the Trainer writes TensorBoard itself

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.logger.log(state.global_step, {k: v for k, v in logs.items() if isinstance(v, (int, float))})

    def on_train_end(self, args, state, control, **kwargs):
        self.logger.close()  # flushes; a later evaluate() reopens the file in append mode


def hardware_training_args(gradient_checkpointing: bool | None = None) -> dict:
    """TrainingArguments overrides from the hardware found (see prefloop.hardware), announced once."""
    kwargs = trainer_precision_kwargs(gradient_checkpointing)
    print(f"[prefloop] hardware: {detect().describe()}; gradient checkpointing "
          f"{'on' if kwargs['gradient_checkpointing'] else 'off'}")
    return kwargs
