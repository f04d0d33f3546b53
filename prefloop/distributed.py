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


def state():
    """accelerate's PartialState: the process group, started on first call (gloo when there is no GPU)."""
    from accelerate import PartialState

    from prefloop.hardware import detect

    # cpu=True lets accelerate start N CPU processes over gloo from `accelerate launch` (torchrun's
    # environment); without it, it would look for a GPU per process.
    return PartialState(cpu=detect().device == "cpu")


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
