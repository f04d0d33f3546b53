"""Reporting any trainer can use: phase timings, sample tables (console, TensorBoard, samples.jsonl)
and metric plots from metrics.jsonl."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch


class StepTimer:
    """Wall time per phase (seconds), synchronising the accelerator so the split is honest."""

    def __init__(self, device):
        self.device, self.times = torch.device(device), {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def totals(self) -> dict[str, float]:
        return {f"time/{k}": v for k, v in self.times.items()}


def log_samples(step: int, rows: list[dict], logger, bar, samples_path: Path) -> None:
    """A table of generations ({prompt, response, score} rows): console, TensorBoard, and samples.jsonl
    (full text)."""
    bar.write(f"\nstep {step}: sample generations")
    bar.write(f"{'score':>8}  {'prompt':<40}  response")
    for row in rows:
        bar.write(f"{row['score']:8.3f}  {_one_line(row['prompt'][-1]['content'], 40):<40}  "
                  f"{_one_line(row['response'], 80)}")
    table = "| score | prompt | response |\n|---|---|---|\n" + "\n".join(
        f"| {r['score']:.3f} | {_md_cell(r['prompt'][-1]['content'])} | {_md_cell(r['response'])} |" for r in rows)
    logger.log_text(step, "samples", table)
    with samples_path.open("a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({"step": step, **row}, ensure_ascii=False) + "\n")


def _one_line(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _md_cell(text: str) -> str:
    return _one_line(text, 200).replace("|", "\\|").replace("<", "&lt;")


PPO_PLOTS = (("reward.png", ("score", "rlhf_reward"), "reward", None),
             ("kl.png", ("kl_k1", "kl_k3"), "KL(pi || pi_ref), nats per response", "beta"))


def save_plots(metrics_path: Path, out_dir: Path, plots=PPO_PLOTS, xlabel: str = "step") -> list[Path]:
    """One PNG per (file name, metric keys, y label, key on a second axis or None), against the step.
    The default: reward.png (score and KL-penalised reward) and kl.png (KL estimates and beta)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefloop.metrics import read_metrics

    rows = read_metrics(metrics_path) if metrics_path.exists() else []
    if not rows:
        return []
    steps = [r["step"] for r in rows]
    written = []
    for name, keys, ylabel, twin in plots:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key in keys:
            ax.plot(steps, [r.get(key) for r in rows], label=key)
        if twin is not None:
            ax2 = ax.twinx()
            ax2.plot(steps, [r.get(twin) for r in rows], "k--", label=twin)
            ax2.set_ylabel(twin)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(loc="best")
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    return written
