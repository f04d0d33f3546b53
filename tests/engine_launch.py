"""`python -m engine_launch ENGINE align-args...` under `accelerate launch`: an `align` command whose
Accelerator runs ENGINE (ddp, fsdp2, zero2, zero3) on CPU processes over gloo.

accelerate selects FSDP and DeepSpeed for GPU processes only: CPU processes (prefloop starts them with
cpu=True, see configs/accelerate_ddp.yaml) always get plain DDP. Here the Accelerator that
align.onpolicy.toolkit.start builds is switched, right after accelerate has set up the gloo process group, to the
engine's distributed type with the plugin that configs/accelerate_fsdp.yaml or
configs/accelerate_deepspeed.yaml would give it. From there on everything is accelerate's and the
engine's own code: `prepare` shards with FSDP2's fully_shard or wraps a DeepSpeed ZeRO engine, and
backward, clipping, stepping, save_state and load_state go through them. The GPU stays stood in for, not
the engine.
"""

from __future__ import annotations

import os
import sys


def force_engine(accelerator, engine: str) -> None:
    from accelerate.utils import DistributedType

    state = accelerator.state
    if engine == "fsdp2":
        from accelerate.utils import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                                reshard_after_forward=True, state_dict_type="FULL_STATE_DICT",
                                                cpu_ram_efficient_loading=False)
        state.fsdp_plugin = plugin
        state.distributed_type = DistributedType.FSDP
    elif engine in ("zero2", "zero3"):
        import deepspeed
        import deepspeed.comm.torch
        from accelerate.utils import DeepSpeedPlugin

        # DeepSpeed's CPU accelerator would JIT-compile its shared-memory all-reduce (minutes of C++);
        # gloo's own collectives do the same sums.
        deepspeed.comm.torch.build_shm_op = lambda: None
        deepspeed.init_distributed(dist_backend="gloo")
        plugin = DeepSpeedPlugin(zero_stage=int(engine[-1]), gradient_accumulation_steps=1, gradient_clipping=1.0,
                                 zero3_init_flag=False)
        plugin.set_mixed_precision("no")
        state.deepspeed_plugins = {"default": plugin}
        plugin.select(_from_accelerator_state=True)
        state.distributed_type = DistributedType.DEEPSPEED
        accelerator.deepspeed_engine_wrapped = None
    elif engine != "ddp":
        raise SystemExit(f"unknown engine {engine}")
    from accelerate.state import PartialState

    PartialState._shared_state["distributed_type"] = state.distributed_type  # as AcceleratorState sets it


def main() -> int:
    engine, argv = sys.argv[1], sys.argv[2:]
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import accelerate

    class EngineAccelerator(accelerate.Accelerator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            force_engine(self, engine)

    accelerate.Accelerator = EngineAccelerator  # align.onpolicy.toolkit.start imports it at call time
    from align.cli import main as align_main

    return align_main(argv)


if __name__ == "__main__":
    sys.exit(main())
