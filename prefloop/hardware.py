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

    threads = torch.get_num_threads()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware("cuda", torch.cuda.device_count(), torch.cuda.is_bf16_supported(), True,
                        threads, props.total_memory / 2**30)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return Hardware("mps", 1, False, True, threads, _system_memory_gib())
    # CPUs: only trust bf16 where the CPU has native bf16 units (AMX / AVX512-BF16).
    return Hardware("cpu", 1, _cpu_has_bf16(), False, threads, _system_memory_gib())


def _cpu_has_bf16() -> bool:
    if os.environ.get("PREFLOOP_CPU_BF16") is not None:  # explicit override for odd CPUs
        return os.environ["PREFLOOP_CPU_BF16"] == "1"
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    if "amx_bf16" not in flags and "avx512_bf16" not in flags:
        return False
    # Virtual machines can advertise a flag the host does not really deliver: measure.
    return _bf16_matmul_not_slower()


def _bf16_matmul_not_slower(n: int = 512, reps: int = 3) -> bool:
    """Time one n x n matmul in fp32 and in bf16 (a few ms); bf16 must be at least as fast."""
    import time

    import torch

    def best(dtype) -> float:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up: first call picks the kernel
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times)

    return best(torch.bfloat16) <= best(torch.float32)


def _system_memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 0.0


def trainer_precision_kwargs(gradient_checkpointing: bool | None = None) -> dict:
    """Overrides for transformers/TRL TrainingArguments picked from the hardware found.

    Gradient checkpointing trades ~30% more compute for activation memory; it is only
    worth it on an accelerator short of memory, so it is off unless asked for.
    """
    hw = detect()
    checkpointing = bool(gradient_checkpointing)
    return {
        "bf16": hw.bf16,
        "fp16": hw.precision == "fp16",
        # transformers 5 renamed it; setting the new name wins over TRL's default of the old one
        "activation_checkpointing": checkpointing,
        "gradient_checkpointing": checkpointing,
        "use_cpu": hw.device == "cpu",
    }
