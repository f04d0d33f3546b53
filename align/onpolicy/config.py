"""The fields every on-policy trainer shares (PPO, online DPO, GRPO, RLOO), named as transformers/TRL name them.

`output_dir`, `max_steps`, `save_steps`, `save_total_limit`, `learning_rate`, `max_grad_norm`, `seed`,
`max_new_tokens`, `temperature` and the LoRA fields mean what they mean in TRL's configs; `reward_model`
is TRL's `reward_model_path` widened to also take a Python callable. No torch import here: `--help`
is answered from these classes alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from prefloop.config import check_ranges
from prefloop.config import config_field as _f
from prefloop.fields import PolicyLoraFields, RunFields, StoreFields
from prefloop.models import DEFAULT_MODEL


@dataclass
class OnPolicyConfig(RunFields, PolicyLoraFields, StoreFields):
    """Fields of a trainer that samples from its own policy pi_theta and scores with a reward r(x, y)."""

    # --- models and data -----------------------------------------------------------------
    model: str = _f(DEFAULT_MODEL, "policy pi_theta to fine-tune; its initial weights are the reference pi_ref "
                                   "(embedded name, HF id, local directory or training run)")
    reward_model: str = _f("", "reward r(x, y): a `reward-model train` run or model directory, or a Python "
                               "callable 'module:function' taking (prompts, responses), one float per response")
    prompts: str | None = _f(None, "prompts x: .jsonl/.parquet/.csv file or datasets directory with a "
                                   "'prompt' (conversation or string: a user turn), 'messages' or 'text' column")
    max_prompts: int | None = _f(None, "use at most this many prompts (None: all)", range=">= 1")
    max_prompt_length: int = _f(256, "prompt tokens kept (the beginning of longer prompts is cut)", range=">= 1")
    eval_prompts: str | None = _f(None, "held-out prompts file; default: the export's X.test.jsonl beside "
                                        "--prompts X.train.jsonl (none: no held-out evaluation)")
    eval_steps: int = _f(0, "steps between held-out evaluations; 0 = at start and end only", range=">= 0")
    output_dir: str = _f("runs/onpolicy", "the run: final/ (the policy), checkpoints/, metrics.jsonl, "
                                          "tensorboard/, run.json")

    # --- sampling ------------------------------------------------------------------------
    max_steps: int = _f(100, "training steps: each samples from pi_theta, scores and updates", range=">= 1")
    batch_size: int = _f(8, "prompts x sampled per step per process", range=">= 1")
    max_new_tokens: int = _f(64, "response length limit in tokens", range=">= 1")
    temperature: float = _f(0.7, "sampling temperature T: y ~ softmax(z / T); log-probs use the same T", range="> 0")
    sampling_shards: int = _f(1, "each process samples its batch in this many equal shards, each seeded by its "
                                 "place in the global batch, minibatches drawing equally from each: N shards on "
                                 "one process train exactly as N processes (and bound the sampler's memory)", range=">= 1")

    # --- optimisation ----------------------------------------------------------------------
    learning_rate: float = _f(1e-5, "AdamW learning rate eta", range="> 0")
    max_grad_norm: float = _f(1.0, "clip the global gradient norm to this", range="> 0")
    lr_schedule: str = _f("constant", "learning-rate schedule over the steps: constant, or linear decay to 0 "
                                      "(CleanRL's anneal_lr)", choices=["constant", "linear"])
    warmup_steps: int = _f(0, "linear learning-rate warmup over the first steps", range=">= 0")
    adam_eps: float = _f(1e-8, "Adam epsilon", range="> 0")
    weight_decay: float = _f(0.0, "AdamW weight decay", range=">= 0")

    # --- LoRA (Hu et al. 2021) ------------------------------------------------------------------

    # --- logging and checkpoints -----------------------------------------------------------------
    sample_every: int = _f(10, "print and log a table of sample generations every N steps (0: never)", range=">= 0")
    num_samples: int = _f(4, "rows in the sample table", range=">= 1")
    save_steps: int = _f(25, "write a checkpoint every N steps (and at the end)", range=">= 1")

    # the reward r(x, y) is the reward model here; GRPO/RLOO score with graders and make it optional
    REWARD_MODEL_REQUIRED: ClassVar[bool] = True

    def __post_init__(self):
        if self.REWARD_MODEL_REQUIRED and not self.reward_model:
            raise ValueError("reward_model is required: a reward-model directory or 'module:function'")
        check_ranges(self)  # every field's declared range, the subclasses' fields too
        self.check_store_source("prompts", self.prompts)
        if self.batch_size % self.sampling_shards:
            raise ValueError(f"sampling_shards {self.sampling_shards} must divide batch_size {self.batch_size}")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError("lr_schedule must be constant or linear")


def is_callable_spec(spec: str) -> bool:
    """'package.module:function' (and not a path that happens to contain a colon)."""
    return ":" in spec and not Path(spec).exists() and "/" not in spec.split(":")[0]
