"""The engine: pi_theta's module (PPO's with its critic) and the optimizer, prepared by accelerate once for
every on-policy trainer. DDP averages the gradients, FSDP2 and DeepSpeed ZeRO-2/3 reduce and shard them;
nothing here averages a gradient by hand. What the loop adds around the engine:

    engine = Engine(cfg, accelerator, PolicyModule(policy))       # AdamW, accelerate.prepare
    engine.set_learning_rate(step)                                # warmup, then constant or linear decay
    for rows in engine.minibatches(n, mini_batch_size, epochs, step):    # every shard's rows, stratified
        with engine.accumulating(last):                           # a micro-batch's gradients stay local
            engine.backward(loss)
        grad_norm = engine.step({"loss": loss})                   # clip, refuse a non-finite gradient, step

Statistics of the global batch (token counts, means for whitening) are sums over processes
(`engine.sum`, prefloop.distributed): numbers, never gradients.

Shards: each process samples its `batch_size` prompts in `cfg.sampling_shards` equal shards; a shard's
noise and its minibatch order are seeded by its place in the global batch (align.onpolicy.toolkit.shard_seed),
and every minibatch takes the same number of rows from every shard. So a step is a function of the
global batch alone: N processes with one shard each train exactly as one process with N shards (the
engine's averaging of per-process means is the mean over the global minibatch), which is what
tests/test_onpolicy_engines.py checks.
"""

from __future__ import annotations

import contextlib

import torch

from prefloop import distributed


class Engine:
    """The prepared module and optimizer, and the optimizer step every on-policy algorithm takes."""

    def __init__(self, cfg, accelerator, module: torch.nn.Module):
        self.cfg, self.acc = cfg, accelerator
        module = module.to(accelerator.device)
        module.eval()  # no dropout anywhere: log pi must be the same at rollout and at update [N-details]
        params = [p for p in module.parameters() if p.requires_grad]
        # The fused kernel updates all tensors in one pass (fp32 master weights, CPU or CUDA): ~13x on a CPU.
        fused = torch.device(accelerator.device).type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, eps=cfg.adam_eps,
                                      weight_decay=cfg.weight_decay, fused=fused)
        if self.deepspeed:  # no dataloader tells DeepSpeed its micro-batch; it only sizes its bookkeeping
            ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
            ds_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
            ds_config["gradient_accumulation_steps"] = 1  # the loop marks its own accumulation boundaries
            ds_config["gradient_clipping"] = cfg.max_grad_norm
        self.model, self.optimizer = accelerator.prepare(module, optimizer)
        if accelerator.is_main_process:
            print(f"[prefloop] engine {self.describe()}")

    def describe(self) -> str:
        """The engine in words: its distributed type, the prepared module's class, the shard of the weights here."""
        from torch.distributed.tensor import DTensor

        name = str(self.acc.distributed_type).split(".")[-1]
        if self.deepspeed:
            name += f" ZeRO-{self.acc.state.deepspeed_plugin.zero_stage}"
        params = list(self.model.parameters())
        local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
        if self.deepspeed and self.acc.state.deepspeed_plugin.zero_stage == 3:
            local = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
        return f"{name}: {type(self.model).__name__}, {local:,} parameter values held by this process"

    @property
    def deepspeed(self) -> bool:
        from accelerate.utils import DistributedType

        return self.acc.distributed_type == DistributedType.DEEPSPEED

    def prepare_reference(self, ref_model):
        """pi_ref's frozen copy, ready for passes without gradients. Under ZeRO-3 transformers loaded it
        partitioned (as the policy), and no engine would gather it: it gets a DeepSpeed engine of its own
        without an optimizer, whose hooks gather each layer for its forward (TRL's prepare_deepspeed)."""
        if ref_model is None or not (self.deepspeed and self.acc.state.deepspeed_plugin.zero_stage == 3):
            return ref_model
        import copy

        import deepspeed

        config = copy.deepcopy(self.acc.state.deepspeed_plugin.deepspeed_config)
        config.pop("optimizer", None)
        config.pop("scheduler", None)
        ref_engine, *_ = deepspeed.initialize(model=ref_model, config=config)
        ref_engine.eval()
        return ref_engine.module

    def gathered(self):
        """Whole weights on every process for as long as the context lasts: ZeRO-3 partitions them (the final
        save reads them whole); FSDP2's are gathered by save_final itself, every other engine's are whole."""
        if self.deepspeed and self.acc.state.deepspeed_plugin.zero_stage == 3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(self.unwrapped.parameters()))
        return contextlib.nullcontext()

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.acc.unwrap_model(self.model)

    @property
    def num_processes(self) -> int:
        return self.acc.num_processes

    # -- the learning rate -------------------------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        """eta at step `step` (from 0): linear warmup over warmup_steps, then constant or a linear decay to
        0 over the run (CleanRL's anneal_lr: frac = 1 - step / steps). A function of the step: resumable."""
        cfg = self.cfg
        warmup = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        decay = 1.0 - step / cfg.max_steps if cfg.lr_schedule == "linear" else 1.0
        return cfg.learning_rate * warmup * decay

    def set_learning_rate(self, step: int) -> float:
        lr = self.learning_rate(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    # -- gradients ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def accumulating(self, last: bool = True):
        """Forward and backward of one micro-batch; unless it is the minibatch's `last`, its gradients stay
        on this process (DDP's no_sync, FSDP2's set_requires_gradient_sync(False), DeepSpeed's
        accumulation boundary) until the last one's backward reduces them all at once."""
        if self.deepspeed:
            self.acc.gradient_state._set_sync_gradients(last)  # accelerate's backward steps DeepSpeed then
            try:
                yield
            finally:
                self.acc.gradient_state._set_sync_gradients(True)
        elif last:
            yield
        else:
            with self.acc.no_sync(self.model):
                yield

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of `loss`; the engine reduces them over processes (DeepSpeed also clips and steps here,
        at the minibatch's last micro-batch)."""
        self.acc.backward(loss)

    def step(self, losses: dict) -> float:
        """Clip to max_grad_norm, refuse a gradient that is not finite, apply the update, clear the gradients.
        -> the gradient norm before clipping. `losses`: what to name in the error (this minibatch's terms).

        Applied, one NaN turns every weight into NaN and the run fails a step later somewhere unrelated
        (sampling from NaN probabilities). Under DeepSpeed the engine has already clipped and stepped
        inside `backward` (accelerate's design): the norm is its own, and a non-finite one is reported
        after the update rather than before.
        """
        grad_norm = clip_gradients(self.acc, self.model.parameters(), self.cfg.max_grad_norm, losses)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    # -- minibatches and statistics of the global batch -------------------------------------------------

    def minibatches(self, n_rows: int, mini_batch_size: int, epochs: int, step: int):
        """Row indices of each minibatch, `epochs` passes over this process's `n_rows` rows: each shard's rows
        shuffled by its own generator (seeded by its place in the global batch), every minibatch taking
        `mini_batch_size / shards` rows from every shard."""
        from align.onpolicy.toolkit import shard_seed

        shards = self.cfg.sampling_shards
        per_shard, take = n_rows // shards, mini_batch_size // shards
        generators = [torch.Generator().manual_seed(shard_seed(self.cfg.seed, step, self.acc.process_index * shards + s))
                      for s in range(shards)]
        for _ in range(epochs):
            orders = [torch.randperm(per_shard, generator=g) + s * per_shard for s, g in enumerate(generators)]
            for start in range(0, per_shard, take):
                yield torch.cat([order[start:start + take] for order in orders])

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over every process (a statistic of the global batch: never a gradient)."""
        return distributed.sum_over_processes(tensor)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return distributed.gather(tensor)


def clip_gradients(accelerator, parameters, max_norm: float, losses: dict) -> torch.Tensor:
    """Clip to `max_norm`; a gradient that is not finite is refused before the optimizer applies it."""
    grad_norm = accelerator.clip_grad_norm_(parameters, max_norm)
    if grad_norm is None:  # DeepSpeed before its first step reports none
        return torch.tensor(0.0)
    if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
        grad_norm = grad_norm.full_tensor()
    if not torch.isfinite(torch.as_tensor(grad_norm)).all():
        shown = ", ".join(f"{k} {float(v):.4g}" for k, v in losses.items())
        raise FloatingPointError(f"the gradient is not finite (norm {float(grad_norm)}; {shown}); "
                                 "the update was not applied")
    return grad_norm


def global_share(engine: Engine, count: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """The weight that turns a mean over `count` local items (tokens, pairs) into this process's share of
    the mean over `total` items of the global minibatch, once the engine has averaged over processes:
    count * N / total. One process, one micro-batch: exactly 1."""
    return count * engine.num_processes / total.clamp(min=1)
