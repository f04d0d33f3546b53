"""Configuration of `align sft`: supervised fine-tuning on the `sft` export."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.train_common import TrainConfig


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning: maximise log π_θ(y|x) of the edited ideal responses and clear winners."""

    output_dir: str = field(default="runs/sft", metadata={"help": "the run: final/ (the model), checkpoints/, "
                                                                   "metrics.jsonl, tensorboard/, run.json"})
    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW step size η", "range": "> 0"})
    completion_only_loss: bool = field(default=True, metadata={"help": "NLL on the response y only, not on the "
                                                                       "prompt x"})
    packing: bool = field(default=False, metadata={"help": "pack several short examples into one max_length row"})
