"""Metrics logging: every long job writes JSONL (schema: step, time, metrics) and TensorBoard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path


class MetricsLogger:
    """Append-only `metrics.jsonl` plus TensorBoard scalars under `log_dir`.

    Each JSONL line is {"step": int, "time": unix seconds, **scalars}; resuming a job
    appends to the same file, so the file is the job's whole history.
    """

    def __init__(self, log_dir: str | Path, tensorboard: bool = True):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.log_dir / "metrics.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.log_dir / "tensorboard"))
            except ImportError:  # tensorboard is a declared dependency; tolerate its absence
                self._tb = None

    def log(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        clean = {k: _to_float(v) for k, v in metrics.items()}
        if self._file.closed:  # e.g. a Trainer's evaluate() after train() ended and closed us
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps({"step": step, "time": round(time.time(), 3), **clean}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in clean.items():
                if value is not None and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
        return clean

    def log_text(self, step: int, tag: str, text: str) -> None:
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
