"""Configuration of `labeling leaderboard` (kept apart so `--help` imports neither numpy nor the store)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefloop.fields import store_field


@dataclass
class LeaderboardConfig:
    """Rank the models of a project by Bradley-Terry strength, with bootstrap intervals (Chatbot Arena)."""

    project: str = field(metadata={"help": "project name"})
    store: str | None = store_field()
    prior: float = field(default=0.5, metadata={
        "help": "Bradley-Terry prior: virtual wins and losses of each model p_i against a reference p = 1 "
                "(MM iteration, Hunter 2004); 0 = plain maximum likelihood", "range": ">= 0"})
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap replicates R (resampled games); 0 = none",
                                                   "range": ">= 0"})
    confidence: float = field(default=0.95, metadata={"help": "coverage of the percentile intervals",
                                                      "range": "(0, 1)"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap resampling", "range": "seed"})
    plot: str | None = field(default=None, metadata={"help": "write the chart to this new PNG file (or .svg, .pdf)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --plot file"})
    json: bool = field(default=False, metadata={"help": "print JSON instead of a table"})

    def __post_init__(self):
        from prefloop.config import check_ranges

        check_ranges(self)
