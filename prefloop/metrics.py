"""Metrics logging: every long job writes JSONL (schema: step, time, metrics) and TensorBoard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path


class MetricsLogger:
    """`metrics.jsonl` plus TensorBoard scalars (`tensorboard/`) under `log_dir`.

    Each JSONL line is {"step": int, "time": unix seconds, **scalars}, one line per step: what is
    logged for the step being written (a training row, then an evaluation at the same step) merges
    into one line, written when the next step starts, on `flush` (before a checkpoint) or on `close`.
    A resumed job appends to the same file after `keep_through` (the checkpoint's step) has dropped
    the rows it will compute again, so the file is the job's whole history with no step twice.
    """

    def __init__(self, log_dir: str | Path, tensorboard: bool = True, keep_through: int | None = None):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.log_dir / "metrics.jsonl"
        if keep_through is not None and self.path.exists():
            _truncate(self.path, keep_through)
        self._file = self.path.open("a", encoding="utf-8")
        self._pending: dict | None = None  # the row of the step being logged
        self._last: tuple[int, dict] | None = None  # (file offset, row) of the last row written
        self._tb = None
        if tensorboard:
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
        if self._tb is not None:
            for key, value in clean.items():
                if value is not None and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
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
