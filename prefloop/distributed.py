"""Several processes under `accelerate launch`: one process group, one writer, replicas kept in step.

Under `accelerate launch --num_processes N -m align.cli ppo ...` every process runs the whole command.
The rule that keeps a run directory whole: every process computes, only the main process writes
(run.json, metrics, data snapshots, the final model), and the others wait for it wherever they would
read what it wrote. Decisions that could differ between processes (the precision, measured by a
timing probe) are the main process's, broadcast to the others.

The process group (gloo on a CPU, NCCL on GPUs) starts here on first use, as accelerate's
`PartialState`, before any trainer exists; transformers' TrainingArguments and our Accelerator reuse it.
One process (a plain `align ppo`) has no group, and every function here is then a no-op.
"""

from __future__ import annotations

import functools
import os

SHARDED_ENGINES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


def sharded_engines_requested() -> list[str]:
    """The engines `accelerate launch --config_file ...` asked for (its environment), whether or not
    accelerate turns them on (it does for GPUs only)."""
    return [engine for env, engine in SHARDED_ENGINES.items() if os.environ.get(env, "false").lower() == "true"]


def state():
    """accelerate's PartialState: the process group, started on first call (gloo when there is no GPU)."""
    from accelerate import PartialState

    from prefloop.hardware import detect

    # cpu=True lets accelerate start N CPU processes over gloo from `accelerate launch` (torchrun's
    # environment); without it, accelerate looks for a GPU per process and, finding none, starts N
    # unconnected single processes.
    cpu = detect().device == "cpu"
    st = PartialState(cpu=cpu)
    if cpu and st.num_processes > 1 and st.is_main_process:
        _say_sharding_needs_gpus()
    return st


@functools.cache
def _say_sharding_needs_gpus() -> None:
    """accelerate (1.15) turns on FSDP and DeepSpeed for GPU-like devices only: CPU processes launched with
    configs/accelerate_fsdp.yaml or accelerate_deepspeed.yaml run plain data parallel. Said once, not hidden."""
    for engine in sharded_engines_requested():
        print(f"[prefloop] {engine} needs GPUs under accelerate; these CPU processes train plain data "
              "parallel (DDP over gloo), every process holding the whole model")


def is_main_process() -> bool:
    return state().is_main_process


def num_processes() -> int:
    return state().num_processes


def wait_for_everyone() -> None:
    state().wait_for_everyone()


def broadcast(value):
    """The main process's `value` on every process (any picklable object)."""
    if num_processes() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_replicas_agree(model) -> None:
    """Raise unless every process holds the same weights: data parallelism keeps replicas identical
    only if every gradient was averaged, so a missed all-reduce shows up here, before anything is saved.
    Printed once by the main process. Sharded engines (FSDP, DeepSpeed) hold shards: not compared."""
    from accelerate.utils import DistributedType

    st = state()
    if st.num_processes == 1 or st.distributed_type not in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():  # float64 sum of every parameter, in module order: same weights, same bits
        checksum = float(sum(p.detach().double().sum().item() for p in model.parameters()))
    sums: list = [None] * st.num_processes
    dist.all_gather_object(sums, checksum)
    if len(set(sums)) != 1:
        raise RuntimeError(f"the {st.num_processes} processes hold different weights (checksums {sums}): "
                           "a gradient was not averaged across processes")
    if st.is_main_process:
        print(f"[prefloop] {st.num_processes} processes hold identical weights (checksum {checksum:.6g})")


# ---------------------------------------------------------------------------
# statistics of the global batch (never gradients: the engine reduces those)
# ---------------------------------------------------------------------------


def sum_over_processes(tensor):
    """The elementwise sum of `tensor` over every process (a token count, a sum of advantages): what a
    statistic of the global batch needs. One process: `tensor` itself."""
    if num_processes() == 1:
        return tensor
    import torch.distributed as dist

    total = tensor.clone()
    dist.all_reduce(total)
    return total


def gather(tensor):
    """`tensor` (n, ...) of every process, concatenated in process order (n equal everywhere)."""
    if num_processes() == 1:
        return tensor
    import torch
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(num_processes())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def mean_over_processes(stats: dict, sums: tuple[str, ...] = ()) -> dict[str, float | None]:
    """Each metric averaged over the processes that measured it (None: not measured here), counts named
    in `sums` summed, in one collective: what the main process logs describes the global batch. A key
    that only some processes have (a grader named by some rows only) counts as not measured elsewhere."""
    import torch

    if num_processes() > 1:  # the same keys, in the same order, everywhere
        import torch.distributed as dist

        every: list = [None] * num_processes()
        dist.all_gather_object(every, list(stats))
        stats = {k: stats.get(k) for k in dict.fromkeys(k for keys in every for k in keys)}
    values = torch.tensor([float("nan") if stats[k] is None else float(stats[k]) for k in stats],
                          dtype=torch.float64, device=state().device)  # (M,)
    present = ~values.isnan()
    totals = sum_over_processes(torch.stack([values.nan_to_num(0.0), present.double()]))  # (2, M)
    means = totals[0] / totals[1]
    return {k: (totals[0, i].item() if k in sums else means[i].item()) if totals[1, i] > 0 else None
            for i, k in enumerate(stats)}
