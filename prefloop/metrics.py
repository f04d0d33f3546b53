"""Metrics logging: every long job writes JSONL (schema: step, time, metrics) and, by `--report-to`, TensorBoard,
Weights & Biases and MLflow.

    logger = MetricsLogger(run_dir, report_to=["tensorboard", "wandb"], config=run_config, run_name="ppo-1")

`report_to` is every command's field (`report_to_field`, checked at start by `check_report_to`):
tensorboard (the default: OUT/tensorboard/), wandb and mlflow (through accelerate's trackers, which
also take the run config), or none. Every tracker gets the same names and values as metrics.jsonl.
W&B reads its usual variables (WANDB_MODE, WANDB_PROJECT; WANDB_DIR, else OUT/wandb/), MLflow its own
(MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME; the experiment is "prefloop" otherwise).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path

from prefloop.errors import ConfigError

TRACKERS = ("tensorboard", "wandb", "mlflow")
EXTRA_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}  # tracker -> module; `pip install prefloop[NAME]`


def report_to_field():
    """The `report_to` field every command's config declares (one help, one default)."""
    from prefloop.config import config_field

    return config_field(["tensorboard"], "experiment trackers that get metrics.jsonl's metrics and the run config: "
                                         "tensorboard, wandb, mlflow (pip install prefloop[wandb] / prefloop[mlflow]),"
                                         " several at once, or none")


def check_report_to(report_to) -> tuple[str, ...]:
    """The trackers named, checked: an unknown name or a tracker whose package is missing is one line."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    names = [n.strip().lower() for item in names for n in str(item).split(",") if n.strip()]
    if names == ["none"] or not names:
        return ()
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"report_to: unknown tracker {unknown[0]!r}; choose from {', '.join(TRACKERS)} or none")
    for name in names:
        module = EXTRA_PACKAGES.get(name)
        if module and importlib.util.find_spec(module) is None:
            raise ConfigError(f"report_to: {name} is not installed; pip install 'prefloop[{name}]'")
    return tuple(dict.fromkeys(names))


def start_tracker(name: str, log_dir: Path, run_name: str, config: dict):
    """An accelerate tracker (wandb or mlflow), started, the run config stored; one line if it cannot start."""
    from accelerate import PartialState
    from accelerate.tracking import MLflowTracker, WandBTracker

    PartialState()  # accelerate's trackers log through its logger, which needs the (here: one-process) state
    try:
        if name == "wandb":
            # dir given each time: W&B reads $WANDB_DIR once per process, so a second run would reuse the first's
            tracker = WandBTracker(os.environ.get("WANDB_PROJECT", "prefloop"), name=run_name,
                                   dir=os.environ.get("WANDB_DIR") or str(log_dir))
        else:
            tracker = MLflowTracker(experiment_name="prefloop", run_name=run_name)
        tracker.start()
        tracker.store_init_configuration({k: _param(v) for k, v in config.items()})
    except Exception as err:  # noqa: BLE001 - a login, a URI, a server: whatever it is, one line now
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"report_to {name}: cannot start the tracker ({detail[:300]})") from err
    return tracker


def _param(value):
    """A config value as a tracker parameter: scalars as they are, anything else as its JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value, default=str)


class MetricsLogger:
    """`metrics.jsonl` plus TensorBoard scalars (`tensorboard/`) under `log_dir`.

    Each JSONL line is {"step": int, "time": unix seconds, **scalars}, one line per step: what is
    logged for the step being written (a training row, then an evaluation at the same step) merges
    into one line, written when the next step starts, on `flush` (before a checkpoint) or on `close`.
    A resumed job appends to the same file after `keep_through` (the checkpoint's step) has dropped
    the rows it will compute again, so the file is the job's whole history with no step twice.
    """

    def __init__(self, log_dir: str | Path, tensorboard: bool = True, keep_through: int | None = None,
                 report_to=None, config: dict | None = None, run_name: str | None = None):
        """`report_to` (see check_report_to) picks the trackers; without it, `tensorboard` says whether
        TensorBoard gets the scalars. `config` is stored with the wandb/mlflow run named `run_name`."""
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.log_dir / "metrics.jsonl"
        if keep_through is not None and self.path.exists():
            _truncate(self.path, keep_through)
        self._file = self.path.open("a", encoding="utf-8")
        self._pending: dict | None = None  # the row of the step being logged
        self._last: tuple[int, dict] | None = None  # (file offset, row) of the last row written
        self._tb = None
        names = check_report_to(report_to) if report_to is not None else (("tensorboard",) if tensorboard else ())
        self._trackers = [start_tracker(name, self.log_dir, run_name or self.log_dir.name, config or {})
                          for name in names if name != "tensorboard"]
        if "tensorboard" in names:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.log_dir / "tensorboard"))
            except ImportError:  # tensorboard is a declared dependency; tolerate its absence
                self._tb = None

    def log(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        clean = {k: _to_float(v) for k, v in metrics.items()}
        if self._pending is not None and self._pending["step"] != step:
            self.flush()
        if self._pending is None and self._last is not None and self._last[1]["step"] == step:
            # the step's row went out already (a checkpoint flushed it): take it back and extend it
            offset, self._pending = self._last
            self._file.truncate(offset)
        if self._pending is None:
            self._pending = {"step": step, "time": round(time.time(), 3)}
        self._pending.update(clean)
        finite = {k: v for k, v in clean.items() if v is not None and math.isfinite(v)}
        if self._tb is not None:
            for key, value in finite.items():
                self._tb.add_scalar(key, value, step)
        for tracker in self._trackers:
            if finite:
                tracker.log(finite, step=step)
        return clean

    def flush(self) -> None:
        """Write the pending step's line."""
        if self._pending is None:
            return
        if self._file.closed:  # e.g. an evaluate() after close()
            self._file = self.path.open("a", encoding="utf-8")
        self._last = (self.path.stat().st_size, self._pending)
        self._file.write(json.dumps(self._pending) + "\n")
        self._file.flush()
        self._pending = None
        if self._tb is not None:
            self._tb.flush()

    def log_text(self, step: int, tag: str, text: str) -> None:
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def close(self) -> None:
        self.flush()
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        for tracker in self._trackers:
            tracker.finish()
        self._trackers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DiscardMetrics:
    """MetricsLogger's interface, keeping nothing: what the processes other than the main one log to
    under `accelerate launch`, so that a run's metrics.jsonl holds each step once."""

    def log(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        return {k: _to_float(v) for k, v in metrics.items()}

    def flush(self) -> None:
        pass

    def log_text(self, step: int, tag: str, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _truncate(path: Path, step: int) -> None:
    """Keep the rows up to `step` (a resumed job computes the later ones again), atomically."""
    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line)["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _to_float(value) -> float | None:
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    return float(value)
