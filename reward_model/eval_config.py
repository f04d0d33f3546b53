"""`reward-model eval` and `reward-model score` configurations."""

from __future__ import annotations

from dataclasses import dataclass

from prefloop.config import config_field as _f


@dataclass
class RewardEvalConfig:
    """Held-out accuracy, calibration (ECE of σ(Δ)), reward distribution and learning curve of a reward model."""

    model: str = _f(None, "reward model directory (a `reward-model train` output)")
    data: str | None = _f(None, "pairwise/ranking export to evaluate on; default: the model's data/eval.jsonl")
    output_dir: str | None = _f(None, "where metrics.json and the PNG plots go; default: MODEL/eval")
    bins: int = _f(10, "equal-width bins of σ(Δ) for the expected calibration error")
    batch_size: int = _f(16, "scoring batch size")

    def __post_init__(self):
        if not self.model:
            raise ValueError("--model DIR is required")
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {self.bins}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class ScoreConfig:
    """Score a JSONL file of prompt/response pairs: each output row is the input row plus `reward`."""

    model: str = _f(None, "reward model directory or `package.module:function`")
    input: str = _f(None, "JSONL (or .csv/.parquet) rows holding a prompt and a response")
    output: str = _f(None, "output JSONL: the input rows plus `reward` (and `reward_std` for ensembles)")
    prompt_field: str = _f("prompt", "field holding the prompt (a string or a list of {role, content})")
    response_field: str = _f("response", "field holding the response (a string or [{role, content}])")
    batch_size: int = _f(16, "scoring batch size (inputs are length-sorted within the file)")

    def __post_init__(self):
        for name in ("model", "input", "output"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
