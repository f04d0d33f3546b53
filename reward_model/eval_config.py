"""`reward-model eval` and `reward-model score` configurations."""

from __future__ import annotations

from dataclasses import dataclass

from prefloop.config import check_ranges
from prefloop.config import config_field as _f


@dataclass
class RewardEvalConfig:
    """Held-out accuracy, calibration (ECE of σ(Δ)), reward distribution and learning curve of a reward model."""

    model: str = _f(None, "reward model directory (a `reward-model train` output)")
    data: str | None = _f(None, "pairwise/ranking export to evaluate on; default: the model's data/eval.jsonl")
    output_dir: str | None = _f(None, "where metrics.json and the PNG plots go; default: MODEL/eval")
    bins: int = _f(10, "equal-width bins of σ(Δ) for the expected calibration error", range=">= 2")
    batch_size: int = _f(16, "scoring batch size", range=">= 1")

    def __post_init__(self):
        if not self.model:
            raise ValueError("--model DIR is required")
        check_ranges(self)


@dataclass
class ScoreConfig:
    """Score a JSONL file of prompt/response pairs: each output row is the input row plus `reward`."""

    model: str = _f(None, "reward model directory or `package.module:function`")
    input: str = _f(None, "JSONL (or .csv/.parquet) rows holding a prompt and a response")
    output: str = _f(None, "output JSONL: the input rows plus `reward` (and `reward_std` for ensembles)")
    prompt_field: str = _f("prompt", "field holding the prompt (a string or a list of {role, content})")
    response_field: str = _f("response", "field holding the response (a string or [{role, content}])")
    batch_size: int = _f(16, "scoring batch size (inputs are length-sorted within the file)", range=">= 1")
    overwrite: bool = _f(False, "replace an existing --output file (never the --input, never a directory)")

    def __post_init__(self):
        for name in ("model", "input", "output"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        check_ranges(self)
