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

from prefloop.config import config_field as _f
from prefloop.data import check_test_fraction
from prefloop.models import DEFAULT_MODEL


@dataclass
class OnPolicyConfig:
    """Fields of a trainer that samples from its own policy pi_theta and scores with a reward r(x, y)."""

    # --- models and data -----------------------------------------------------------------
    model: str = _f(DEFAULT_MODEL, "policy pi_theta to fine-tune; its initial weights are the reference pi_ref "
                                   "(embedded name, HF id, local directory or training run)")
    reward_model: str = _f("", "reward r(x, y): a `reward-model train` run or model directory, or a Python "
                               "callable 'module:function' taking (prompts, responses), one float per response")
    prompts: str | None = _f(None, "prompts x: .jsonl/.parquet/.csv file or datasets directory with a "
                                   "'prompt' (conversation or string: a user turn), 'messages' or 'text' column")
    store: str | None = _f(None, "preference-store database URL to take the prompts from (with --project), "
                                 "instead of --prompts")
    project: str | None = _f(None, "project in --store whose prompts to use")
    test_fraction: float = _f(0.0, "--store only: share of prompts held out, the same split by prompt as "
                                   "`labeling export --test-fraction` (test prompts never train)")
    split_seed: int = _f(0, "--store only: the split's seed (`labeling export --seed`)")
    max_prompts: int | None = _f(None, "use at most this many prompts (None: all)")
    max_prompt_length: int = _f(256, "prompt tokens kept (the beginning of longer prompts is cut)")
    eval_prompts: str | None = _f(None, "held-out prompts file; default: the export's X.test.jsonl beside "
                                        "--prompts X.train.jsonl (none: no held-out evaluation)")
    eval_steps: int = _f(0, "steps between held-out evaluations; 0 = at start and end only")
    output_dir: str = _f("runs/onpolicy", "the run: final/ (the policy), checkpoints/, metrics.jsonl, "
                                          "tensorboard/, run.json")
    seed: int = _f(0, "random seed (sampling noise: seed + step + a stride per shard of the global batch)")

    # --- sampling ------------------------------------------------------------------------
    max_steps: int = _f(100, "training steps: each samples from pi_theta, scores and updates")
    batch_size: int = _f(8, "prompts x sampled per step per process")
    max_new_tokens: int = _f(64, "response length limit in tokens")
    temperature: float = _f(0.7, "sampling temperature T: y ~ softmax(z / T); log-probs use the same T")
    sampling_shards: int = _f(1, "each process samples its batch in this many equal shards, each seeded by its "
                                 "place in the global batch, minibatches drawing equally from each: N shards on "
                                 "one process train exactly as N processes (and bound the sampler's memory)")

    # --- optimisation ----------------------------------------------------------------------
    learning_rate: float = _f(1e-5, "AdamW learning rate eta")
    max_grad_norm: float = _f(1.0, "clip the global gradient norm to this")
    lr_schedule: str = _f("constant", "learning-rate schedule over the steps: constant, or linear decay to 0 "
                                      "(CleanRL's anneal_lr)", choices=["constant", "linear"])
    warmup_steps: int = _f(0, "linear learning-rate warmup over the first steps")
    adam_eps: float = _f(1e-8, "Adam epsilon")
    weight_decay: float = _f(0.0, "AdamW weight decay")

    # --- LoRA (Hu et al. 2021) ------------------------------------------------------------------
    lora: bool = _f(False, "train LoRA adapters instead of all weights; pi_ref is then the same weights "
                           "with the adapter disabled (no second copy)")
    lora_r: int = _f(16, "LoRA rank r")
    lora_alpha: int = _f(32, "LoRA scaling alpha (update scaled by alpha / r)")
    lora_dropout: float = _f(0.0, "LoRA dropout (0 keeps log pi deterministic between rollout and update)")
    lora_target_modules: list[str] = _f(["all-linear"], "modules that get LoRA adapters ('all-linear': every "
                                                        "linear layer but the LM head)")
    merge_lora: bool = _f(True, "save the final policy with LoRA merged into the weights (else the adapter alone)")

    # --- logging and checkpoints -----------------------------------------------------------------
    sample_every: int = _f(10, "print and log a table of sample generations every N steps (0: never)")
    num_samples: int = _f(4, "rows in the sample table")
    save_steps: int = _f(25, "write a checkpoint every N steps (and at the end)")
    save_total_limit: int = _f(2, "checkpoints kept in output_dir/checkpoints")
    resume: bool = _f(False, "continue the run in output_dir from its last checkpoint (without it, an "
                             "output_dir holding a run is refused)")

    # the reward r(x, y) is the reward model here; GRPO/RLOO score with graders and make it optional
    REWARD_MODEL_REQUIRED: ClassVar[bool] = True

    def __post_init__(self):
        if self.REWARD_MODEL_REQUIRED and not self.reward_model:
            raise ValueError("reward_model is required: a reward-model directory or 'module:function'")
        if (self.prompts is None) == (self.store is None):
            raise ValueError("give exactly one prompt source: --prompts FILE, or --store URL with --project")
        if self.store is not None and not self.project:
            raise ValueError("--store needs --project")
        for name in ("max_steps", "batch_size", "max_new_tokens", "max_prompt_length", "lora_r", "save_steps",
                     "save_total_limit", "sampling_shards", "num_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_test_fraction(self.test_fraction, self.store)
        for name in ("warmup_steps", "eval_steps", "sample_every", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size % self.sampling_shards:
            raise ValueError(f"sampling_shards {self.sampling_shards} must divide batch_size {self.batch_size}")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError("lr_schedule must be constant or linear")
        for name in ("temperature", "learning_rate", "max_grad_norm", "adam_eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def is_callable_spec(spec: str) -> bool:
    """'package.module:function' (and not a path that happens to contain a colon)."""
    return ":" in spec and not Path(spec).exists() and "/" not in spec.split(":")[0]
