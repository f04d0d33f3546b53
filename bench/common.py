"""What every benchmark shares: the machine line, BENCHMARKS.md sections, a step timer, and the roofline.

Roofline: a benchmark's achieved FLOP/s (6·N·tokens for a training pass, forward plus backward;
2·N·tokens for a forward; Kaplan et al. 2020) divided by the peak of a plain square matmul in the
same precision, measured in the same run on the same (shared, noisy) machine. It says how much of
what this CPU can do the step uses, whatever the CPU.
"""

from __future__ import annotations

import os
import platform
import statistics
import resource
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine() -> str:
    """CPU model (and GPU), cores, the precision prefloop picks, torch version, load at start."""
    import torch

    from prefloop.hardware import detect

    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}{gpu}, {os.cpu_count()} cores, {detect().describe()}; torch {torch.__version__}, "
            f"load average at start {os.getloadavg()[0]:.1f}")


def write_section(section: str, text: str, path: Path = BENCHMARKS) -> None:
    """Replace this benchmark's own section (from its `## ` heading to the next one), leaving the rest."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find(section + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(section))
        rest = old[end + 1:] if end >= 0 else ""
        new = old[:start] + text.rstrip("\n") + "\n" + ("\n" + rest if rest else "")
    path.write_text(new)


def child_env(root: Path = ROOT, *, threads: int | str | None = None, precision: str | None = None,
              paths: tuple = (), **extra: str) -> dict:
    """The environment of a bench's child process: this one's, with `root` (the checkout it runs) first on
    PYTHONPATH, then `paths`, then what PYTHONPATH held; OMP_NUM_THREADS=`threads` when given; on a CPU the
    precision through PREFLOOP_CPU_BF16 ("bf16" -> 1, "fp32" -> 0; anything else leaves the device's own);
    and `extra` as set."""
    env = {**os.environ, **extra,
           "PYTHONPATH": os.pathsep.join([str(root), *map(str, paths), os.environ.get("PYTHONPATH", "")])}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if precision in ("fp32", "bf16"):
        env["PREFLOOP_CPU_BF16"] = "1" if precision == "bf16" else "0"
    return env


def demo_prompt_file(path: Path, **fields) -> Path:
    """The demo prompts (labeling/demo_prompts.jsonl) as chat conversations in a prompts file at `path`, so that
    SmolLM2-Instruct answers through its chat template; `fields` are added to every row."""
    import json

    from align.prompts import as_conversation, load_prompts

    demo, _ = load_prompts(ROOT / "labeling" / "demo_prompts.jsonl")
    path.write_text("".join(json.dumps({"prompt": as_conversation(p), **fields}) + "\n" for p in demo))
    return path


def publish(section: str, body: str, write: bool) -> None:
    """Print a bench's section (its `## ` heading, then the body) and, when asked, write it into BENCHMARKS.md."""
    text = f"{section}\n\n{body}\n"
    print(text)
    if write:
        write_section(section, text)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def step_timer():
    """A transformers TrainerCallback that records wall and CPU seconds of every optimiser step."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.cpu, self.rss_at_start, self._start = [], [], 0.0, None

        def on_train_begin(self, args, state, control, **kwargs):
            self.rss_at_start = rss_mib()

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._start[0])
            self.cpu.append(time.process_time() - self._start[1])  # all threads of this process

    return StepTimer()


def matmul_peak_flops(dtype=None, n: int | None = None, reps: int = 5) -> float:
    """FLOP/s of the best of `reps` n×n matmuls in `dtype` (default: the precision prefloop picks, on any
    device: on a GPU the rows run bf16 autocast, so an fp32 peak would overstate every roofline fraction).
    n defaults to 1024 on a CPU and 8192 on a GPU, where a 1024 matmul is too short to fill the chip."""
    import torch

    from prefloop.hardware import detect

    hw = detect()
    dtype = dtype or hw.dtype
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = n or (8192 if device == "cuda" else 1024)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b  # the first call picks the kernel
    best = float("inf")
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def n_params(model) -> int:
    """N of the 6·N·D rule: every parameter that takes part in a token's forward pass (embeddings tied
    to the LM head count once, as the head's matmul)."""
    return sum(p.numel() for p in model.parameters())


def roofline(n: int, tokens: float, seconds: float, peak: float, passes: float = 6.0) -> float:
    """Achieved FLOP/s (passes·N·tokens / seconds) as a fraction of the matmul peak."""
    return passes * n * tokens / seconds / peak


def compare(ours: list[float], base: list[float], ours_tokens: int, base_tokens: int) -> dict:
    """Throughputs and their ratio. The ratio is the median of back-to-back pairs, which a
    machine whose load drifts during the run (shared CPUs) disturbs far less than a ratio of medians."""
    pairs = [(ours_tokens / o) / (base_tokens / b) for o, b in zip(ours, base)]
    return {"ours_tps": ours_tokens / statistics.median(ours), "base_tps": base_tokens / statistics.median(base),
            "ratio": statistics.median(pairs), "pairs": pairs, "tokens": ours_tokens}


def alternate(ours, base, repeats: int, device, seed: int | None = None) -> dict:
    """Time `base()` then `ours()` (each -> tokens processed) back to back, repeats + 1 times; the first
    round is a warm-up. With `seed`, each call starts from torch.manual_seed(seed + round), so sampling
    rows draw alike. -> compare(ours, base)."""
    import torch

    times, tokens = {"base": [], "ours": []}, {}
    for i in range(repeats + 1):
        for name, fn in (("base", base), ("ours", ours)):
            if seed is not None:
                torch.manual_seed(seed + i)
            sync(device)
            start = time.perf_counter()
            n = fn()
            sync(device)
            if i:
                times[name].append(time.perf_counter() - start)
                tokens[name] = n
    return compare(times["ours"], times["base"], tokens["ours"], tokens["base"])


def bare_lm_backward(policy, mb: dict, accelerator) -> int:
    """The training phases' baseline: a plain causal-LM loss over a micro-batch's rows (every position
    onto the vocabulary), forward and backward, no optimizer; -> the tokens it trained on."""
    import torch

    with accelerator.autocast():
        position_ids = (mb["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        logits = policy(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"],
                        position_ids=position_ids, use_cache=False).logits  # (b, L, V)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                                 mb["input_ids"][:, 1:].flatten())
    loss.backward()
    return mb["input_ids"].numel()


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
