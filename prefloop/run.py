"""One output layout and one resume rule for every trainer (reward model, SFT, DPO, online DPO, PPO).

    OUT/
      run.json                    what ran: command, config, precision, data (source and split), lineage,
                                  and, once finished, the results; one file, written atomically
      metrics.jsonl               one row per step: steps unique, continuing across --resume
      tensorboard/                the same scalars (by the config's report_to, which may also name wandb, mlflow)
      checkpoints/checkpoint-N/   the state --resume continues from (the highest complete N)
      final/                      the model: a plain transformers directory with its tokenizer

The rule: without --resume an OUT that already exists and is not empty is refused with one line (a
command never overwrites what it did not create, nor a finished run). With --resume, OUT must hold a
run.json of the same command; training continues from the last checkpoint (from the start when none
was written yet), with the precision recorded in run.json.

Several processes (`accelerate launch`, see prefloop.distributed): every process checks OUT before any
writes, the precision is the main process's, and only the main process writes run.json and the metrics.

Loaders take either the run directory or its final/ (prefloop.models.final_model_dir), so `--model runs/rm` works.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

RUN_FILE = "run.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class Run:
    """A training run's directory; `record` is run.json's content (written by `save`)."""

    dir: Path
    command: str
    resume: bool
    precision: str
    record: dict = field(default_factory=dict)
    main: bool = True  # the process that writes (one of several under `accelerate launch`)

    @property
    def final_dir(self) -> Path:
        return self.dir / "final"

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints_dir / f"checkpoint-{step}"

    def last_checkpoint(self) -> Path | None:
        """The checkpoint --resume continues from: the highest step, when resuming; else None."""
        found = list_checkpoints(self.checkpoints_dir) if self.resume else []
        return found[-1] if found else None

    def resume_step(self) -> int:
        last = self.last_checkpoint()
        return checkpoint_step(last) if last is not None else 0

    def save(self, **fields) -> None:
        """Merge `fields` into run.json and write it (to a temp file, then renamed: never half-written).
        Every process keeps the record; only the main process writes it."""
        self.record.update(fields)
        if not self.main:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{RUN_FILE}.tmp"
        tmp.write_text(json.dumps(self.record, indent=2, default=str))
        os.replace(tmp, self.dir / RUN_FILE)

    def metrics_logger(self):
        """The run's MetricsLogger; on --resume, rows past the checkpoint go (those steps run again).
        The main process logs; the others get a logger that keeps nothing (one row per step, not N)."""
        from prefloop.metrics import DiscardMetrics, MetricsLogger

        if not self.main:
            return DiscardMetrics()
        config = self.record.get("config") or {}
        return MetricsLogger(self.dir, keep_through=self.resume_step() if self.resume else None,
                             report_to=config.get("report_to", ["tensorboard"]),
                             config={"command": self.command, **config}, run_name=self.dir.resolve().name)


def start_run(output_dir: str | Path, command: str, config: dict, resume: bool) -> Run:
    """Check OUT against the resume rule and decide the precision. Writes nothing (see `Run.save`).

    Under several processes each checks OUT, then all wait, so none reads what the main one writes next."""
    from prefloop import distributed
    from prefloop.errors import InputError
    from prefloop.hardware import detect, hide_checkpointing_alias_warning, run_precision
    from prefloop.metrics import check_report_to

    hide_checkpointing_alias_warning()  # peft's and TRL's, read on every LoRA model
    check_report_to(config.get("report_to"))  # a tracker that is not installed: one line before any work
    out = Path(output_dir)
    record = read_run(out)
    if not resume and out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "holds a run already" if record else "exists and is not empty"
        raise InputError(f"{out}: {what}; pass --resume to continue it, or choose another --output-dir")
    if resume and out.exists() and any(out.iterdir()) and not record:
        raise InputError(f"{out}: --resume: no {RUN_FILE} here, so it is not a run to continue")
    if record and record.get("command") != command:
        raise InputError(f"{out}: --resume: this is a {record.get('command')!r} run, not {command!r}")
    # The main process decides: a timing probe could read differently in each process.
    precision = distributed.broadcast(run_precision(record.get("precision")))
    main = distributed.is_main_process()
    if main:
        source = "recorded in run.json" if record.get("precision") else "detected"
        print(f"[prefloop] {command}: precision {precision} ({source}); {detect().describe()}")
    distributed.wait_for_everyone()
    run = Run(out, command, resume, precision, record, main)
    run.record.update({"command": command, "config": config, "precision": precision,
                       "started": run.record.get("started") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return run


def lineage(model: str | None) -> dict:
    """Where a run's starting model came from: the model, and when it is a training run's output, that
    run's command and data (its store snapshot: project, rounds, last judgment id)."""
    from prefloop.models import resolve_model

    resolved = resolve_model(model)
    parent = run_dir_of(resolved)
    record = read_run(parent) if parent is not None else {}
    return {"parent_model": resolved, "parent_run": str(parent) if parent is not None else None,
            "parent_command": record.get("command"), "parent_data": record.get("data") or record.get("prompts")}


def read_run(path: str | Path) -> dict:
    """run.json of a run directory, or {} when there is none."""
    file = Path(path) / RUN_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints (a checkpoint is written aside and renamed in), lowest step first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name)]
    return sorted(found, key=checkpoint_step)


def checkpoint_step(path: Path) -> int:
    return int(CHECKPOINT_PATTERN.match(Path(path).name).group(1))


def run_dir_of(model_path: str | Path) -> Path | None:
    """The run directory a model belongs to (`runs/x` for `runs/x` or `runs/x/final`), or None."""
    path = Path(model_path)
    for candidate in (path, path.parent):
        if (candidate / RUN_FILE).is_file():
            return candidate
    return None
