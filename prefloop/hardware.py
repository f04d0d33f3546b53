"""Hardware detection and the precision it implies: detect, never assume.

TRL's configs default to bf16=True and gradient checkpointing even on a CPU. A CPU
without bf16 units runs a bf16 matmul hundreds of times slower than fp32, so every
command asks this module instead of trusting a library default.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Hardware:
    device: str  # "cuda", "mps" or "cpu"
    n_devices: int
    bf16: bool  # the device has native bf16 arithmetic
    fp16: bool
    cpu_threads: int
    memory_gib: float  # accelerator memory (or system memory on a CPU)

    @property
    def dtype(self):
        import torch

        if self.bf16:
            return torch.bfloat16
        if self.fp16 and self.device == "cuda":
            return torch.float16
        return torch.float32

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else ("fp16" if self.fp16 and self.device == "cuda" else "fp32")

    def describe(self) -> str:
        return (
            f"{self.device} x{self.n_devices}, {self.memory_gib:.0f} GiB, {self.cpu_threads} CPU threads"
            f" -> precision {self.precision}"
        )


@functools.lru_cache(maxsize=1)
def detect() -> Hardware:
    import torch

    threads = torch.get_num_threads()  # an accelerator's host keeps torch's default
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware("cuda", torch.cuda.device_count(), torch.cuda.is_bf16_supported(), True,
                        threads, props.total_memory / 2**30)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return Hardware("mps", 1, False, True, threads, _system_memory_gib())
    # CPUs: only trust bf16 where the CPU has native bf16 units (AMX / AVX512-BF16).
    bf16 = _cpu_has_bf16()  # timed before the thread count changes, as every caller before saw it
    return Hardware("cpu", 1, bf16, False, set_cpu_threads(), _system_memory_gib())


def set_cpu_threads() -> int:
    """The threads torch computes with on a CPU; -> their number. $PREFLOOP_CPU_THREADS=N sets N
    (1 leaves the other cores to other jobs); else torch's default, one per core, stays.

    Their waits are the problem on a busy machine, not their number: see `passive_openmp_waits`.
    """
    import torch

    wanted = os.environ.get("PREFLOOP_CPU_THREADS")
    if wanted is None:
        return torch.get_num_threads()
    if not wanted.isdigit() or int(wanted) < 1:
        from prefloop.errors import ConfigError

        raise ConfigError(f"PREFLOOP_CPU_THREADS={wanted!r}: expected a whole number >= 1")
    torch.set_num_threads(int(wanted))
    return int(wanted)


def passive_openmp_waits() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless the user set it: an OpenMP thread waiting at a barrier sleeps
    instead of spinning. OpenMP reads it once, as torch loads it, so the console scripts call this first.

    Measured (bench/bench_threads.py, BENCHMARKS.md "CPU threads on a busy machine"; 2-core EPYC shared
    with other jobs, load 13-19): sampling from the embedded model with torch's default 2 threads ran at
    0.1-0.4 tokens/s: each thread spins for a partner the scheduler is not running. One thread ran 12-16x
    faster, the default 2 threads with passive waits 28x (medians of ratios, in alternation). Not measured:
    its cost on an idle machine (a sleeping thread wakes in microseconds); OMP_WAIT_POLICY=ACTIVE restores
    spinning.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _cpu_has_bf16() -> bool:
    if os.environ.get("PREFLOOP_CPU_BF16") is not None:  # explicit override for odd CPUs
        return os.environ["PREFLOOP_CPU_BF16"] == "1"
    # Only a CPU that advertises bf16 units (AMX / AVX512-BF16) is measured: virtual machines can
    # advertise a flag the host does not really deliver.
    return _cpu_flags_bf16() and _bf16_matmul_clearly_faster()


def _bf16_matmul_clearly_faster(n: int = 512, rounds: int = 7, margin: float = 0.8) -> bool:
    """bf16 only when its best n x n matmul time is under `margin` x fp32's best.

    The two dtypes are timed in alternation and each keeps its best of `rounds`, so a burst of load
    from other processes slows both alike instead of deciding the answer; the margin keeps a CPU
    whose bf16 is merely emulated (about as fast as fp32, or slower) on fp32 however the noise falls.
    """
    import time

    import torch

    mats = {dtype: (torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype))
            for dtype in (torch.float32, torch.bfloat16)}
    best = {dtype: float("inf") for dtype in mats}
    for a, b in mats.values():
        a @ b  # warm-up: the first call picks the kernel
    for _ in range(rounds):
        for dtype, (a, b) in mats.items():
            start = time.perf_counter()
            a @ b
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.bfloat16] < margin * best[torch.float32]


PRECISIONS = ("fp32", "bf16", "fp16")


def run_precision(recorded: str | None = None) -> str:
    """The precision of a training run: the one recorded when it started (on --resume), else detected.

    A run decides once: a resumed run must not change its numerics (or speed) because the probe
    reads differently under another load. A recorded choice this device cannot run falls back, loudly.
    """
    hw = detect()
    if recorded is None:
        return hw.precision
    if recorded not in PRECISIONS:
        raise ValueError(f"unknown recorded precision {recorded!r}; expected one of {', '.join(PRECISIONS)}")
    runnable = {"fp32": True, "bf16": hw.device == "cuda" and hw.bf16 or hw.device == "cpu" and _cpu_flags_bf16(),
                "fp16": hw.device in ("cuda", "mps")}
    if not runnable[recorded]:
        print(f"[prefloop] the run recorded precision {recorded}, which this {hw.device} cannot run; "
              f"using {hw.precision}")
        return hw.precision
    return recorded


def _cpu_flags_bf16() -> bool:
    if os.environ.get("PREFLOOP_CPU_BF16") is not None:
        return os.environ["PREFLOOP_CPU_BF16"] == "1"
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _system_memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 0.0


def trainer_precision_kwargs(gradient_checkpointing: bool | None = None, precision: str | None = None) -> dict:
    """Overrides for transformers/TRL TrainingArguments: the run's `precision` (default: detected).

    Gradient checkpointing trades ~30% more compute for activation memory; it is only
    worth it on an accelerator short of memory, so it is off unless asked for.
    """
    hw = detect()
    precision = precision or hw.precision
    checkpointing = bool(gradient_checkpointing)
    return {
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        **{name: checkpointing for name in _checkpointing_fields()},
        "use_cpu": hw.device == "cpu",
    }


@functools.lru_cache(maxsize=1)
def _checkpointing_fields() -> tuple[str, ...]:
    """The TrainingArguments names of gradient checkpointing in the installed transformers.

    Later transformers 5 releases renamed it activation_checkpointing (the old name a deprecated alias);
    setting the new name there wins over TRL's default of the old one. Earlier 5.x releases (5.17, say)
    know only gradient_checkpointing and refuse the new name, so only the names that exist are set.
    """
    import dataclasses

    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    return tuple(name for name in ("activation_checkpointing", "gradient_checkpointing") if name in fields)


def hide_checkpointing_alias_warning() -> None:
    """Hide transformers' FutureWarning "`is_gradient_checkpointing` is deprecated", and only it.

    transformers 5 renamed the property is_activation_checkpointing; prefloop reads neither, but peft 0.21
    (PeftModel.__init__, so every LoRA model) and TRL 1.16 (disable_gradient_checkpointing in DPO,
    unwrap_model_for_generation) still read the old name, so every trainer printed a warning about a call
    that is not ours and that we cannot change. Called where every trainer starts (prefloop.run.start_run).
    """
    import warnings

    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

