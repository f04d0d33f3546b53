"""The round's trainers, in this process or under `accelerate launch` (the round YAML's `launch:` section).

    launch:                                       # absent or empty: every trainer runs in this process
      config_file: configs/accelerate_fsdp.yaml   # an accelerate config (DDP, FSDP2, DeepSpeed: configs/)
      num_processes: 8                            # one per GPU; on a CPU, gloo processes
      main_process_port: 29600                    # optional: accelerate's default is 29500

With it, step 5 (`reward-model train`) and step 6 (`align dpo | online-dpo | ppo`) each run as

    accelerate launch --config_file F --num_processes N -m reward_model.cli train --config round-R/reward_model.yaml

the command a user would type, on a YAML the round writes beside the run (the record of what ran). The
round itself (generation, judging, export, evaluation) stays one process: only the trainers need the
node's GPUs together. Either way the config is built and checked here first, so a bad field fails in
this process, in one line, before a launch.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from prefloop.config import config_field as _f
from prefloop.errors import BadInput


@dataclass(frozen=True)
class Trainer:
    """One training step of the round: its config class, its function in this process, its command."""

    config: str  # "module:Class"
    train: str  # "module:function", config -> OUT/final (prefloop.run)
    cli: str  # the console script's module, for `accelerate launch -m`
    command: str


TRAINERS = {
    "reward_model": Trainer("reward_model.reward_config:RewardModelConfig", "reward_model.reward_trainer:train",
                            "reward_model.cli", "train"),
    "dpo": Trainer("align.offline.dpo_config:DPOConfig", "align.offline.dpo_trainer:train_offline",
                   "align.cli", "dpo"),
    "online-dpo": Trainer("align.onpolicy.online_dpo_config:OnlineDPOConfig",
                          "align.onpolicy.online_dpo_trainer:train_online", "align.cli", "online-dpo"),
    "ppo": Trainer("align.onpolicy.ppo_config:PPOConfig", "align.onpolicy.ppo_trainer:train_ppo", "align.cli", "ppo"),
}


@dataclass
class LaunchConfig:
    """`launch:` of a round: start its trainers through `accelerate launch`."""

    config_file: str = _f("", "accelerate config file (configs/accelerate_ddp.yaml, _fsdp, _deepspeed), relative "
                              "to the directory the round runs in")
    num_processes: int = _f(1, "processes accelerate starts (one per GPU)", range=">= 1")
    main_process_port: int | None = _f(None, "the main process's port (default: accelerate's, 29500)",
                                       range="[1, 65535]")

    def __post_init__(self):
        from prefloop.config import check_ranges

        if not self.config_file:
            raise ValueError("config_file: name an accelerate config (configs/accelerate_ddp.yaml, ...)")
        check_ranges(self)


class TrainerFailed(BadInput, RuntimeError):
    """A launched trainer exited non-zero; it has printed its own reason above."""


def run_trainer(trainer: Trainer, values: dict, launch: dict, record: Path) -> Path:
    """`trainer` on `values` (its config's fields); -> OUT/final of its run. With `launch` (a LaunchConfig's
    fields) under `accelerate launch`, its config written to `record` first."""
    from prefloop.cli import load_entry

    config = load_entry(trainer.config)(**values)  # checked here, launched or not
    if not launch:
        return Path(load_entry(trainer.train)(config))
    import yaml

    spec = LaunchConfig(**launch)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(yaml.safe_dump(values, sort_keys=False))  # strings, numbers, lists: as in the round YAML
    port = ["--main_process_port", str(spec.main_process_port)] if spec.main_process_port else []
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", spec.config_file,
           "--num_processes", str(spec.num_processes), *port, "-m", trainer.cli, trainer.command,
           "--config", str(record)]
    print(f"[prefloop] accelerate launch {' '.join(cmd[3:])}", flush=True)  # before the children's output
    code = subprocess.run(cmd).returncode  # same environment and directory: relative paths mean the same
    final = Path(config.output_dir) / "final"
    if code != 0 or not final.is_dir():
        raise TrainerFailed(f"launch: `{trainer.command}` under accelerate launch exited with {code} "
                            f"(its output is above; its config: {record})")
    return final
