"""The on-policy toolkit: the pieces the loop (align/onpolicy/loop.py) is built from, each written once.

    run, acc = start(cfg, "align ppo")                      # layout, resume rule, precision, accelerator
    prompts, held_out, source = load_prompts(cfg)           # held out: the export's X.test.jsonl, if any
    reward_fn = load_reward(cfg.reward_model, prompts[0], acc.device)      # probed once, before training
    pair = load_policy_pair(cfg, acc.device, prompts)       # pi_theta and pi_ref (LoRA: the adapter off)
    schedule = PromptSchedule(prompts, cfg.batch_size, cfg.seed, acc.num_processes, acc.process_index)
    rollout = pair.sample(schedule.batch(step), G, cfg.max_new_tokens, cfg.temperature, seed=shard_seed(...))
    scores = score(reward_fn, cfg.reward_model, repeated_prompts, rollout.texts)   # (B,), finite, or one line
    logp = pair.logprobs(rollout, T)                        # (B, R) through the prepared module: gradients
    ref_logp = pair.logprobs(rollout, T, reference=True)    # (B, R), no gradients
    save_checkpoint(acc, run, step, limit); load_checkpoint(acc, run)      # accelerate's save_state

Several processes (`accelerate launch`, prefloop.distributed): `PromptSchedule` gives each process its
own slice of the step's prompts, every pass that carries gradients goes through the module accelerate
prepared (so DDP, FSDP2 or DeepSpeed reduce them: align/onpolicy/engine.py), and only the main process
writes. The log-prob path itself is `align.onpolicy.rollout.response_logits` (written once); checkpoints are
accelerate's `save_state` (model, optimizer, registered objects, RNG states) under OUT/checkpoints/.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil

import torch

from align.onpolicy.rollout import Rollout, generate_responses, response_logprobs
from prefloop.errors import InputError


def start(cfg, command: str):
    """(run, accelerator): the output directory checked against the resume rule, the precision decided
    (or read back from run.json on --resume) and handed to accelerate as its autocast. A launch the engine
    cannot run is refused first (`refuse_sharded_engines`)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from prefloop.config import to_dict
    from prefloop.hardware import detect
    from prefloop.run import start_run

    refuse_sharded_engines(command)
    run = start_run(cfg.output_dir, command, to_dict(cfg), cfg.resume)
    # A previous Accelerator in this Python process (a test, a notebook) fixed its own precision; start
    # afresh, as transformers' TrainingArguments does. The process group (PartialState) is kept.
    AcceleratorState._reset_state()
    # Weights stay fp32 (Adam's master copy); bf16/fp16 is an autocast.
    mixed = run.precision if run.precision != "fp32" else "no"
    accelerator = Accelerator(mixed_precision=mixed, cpu=detect().device == "cpu")
    if accelerator.is_main_process:
        print(f"[prefloop] fp32 weights, autocast {mixed}; {accelerator.num_processes} process(es)")
    accelerator.wait_for_everyone()  # every process has checked OUT before the main one writes into it
    return run, accelerator


# ---------------------------------------------------------------------------
# pi_theta and pi_ref
# ---------------------------------------------------------------------------


class PolicyPair:
    """The policy pi_theta and its reference pi_ref, with one way to sample and one to score tokens.

    With LoRA the reference is the same weights with the adapter disabled (no second copy); with full
    fine-tuning it is a frozen copy of the initial weights. `root` is the module accelerate prepared around
    the policy (align.onpolicy.rollout.PolicyModule, or PPO's ActorCritic): pi_theta's log-probs go through its
    forward, so the engine (DDP, FSDP2, DeepSpeed) sees every pass that carries gradients.
    """

    def __init__(self, policy, ref_model, tokenizer):
        self.policy, self.ref_model, self.tokenizer = policy, ref_model, tokenizer
        self.root = None  # the prepared module (set by the loop's Engine)

    @contextlib.contextmanager
    def reference(self):
        """Yields the module that computes pi_ref (the policy with its adapter off, under LoRA)."""
        if self.ref_model is not None:
            yield self.ref_model
        elif not hasattr(self.policy, "disable_adapter"):
            raise RuntimeError("this PolicyPair has no reference: load_policy_pair(need_reference=False)")
        else:
            with self.policy.disable_adapter():
                yield self.policy

    def sample(self, prompts: list, num_generations: int, max_new_tokens: int, temperature: float, *,
               max_prompt_length: int | None = None, seed: int | None = None, reference: bool = False) -> Rollout:
        """`num_generations` responses per prompt, prompt-major (P*G rows); a `seed` leaves the global RNG
        untouched (the same noise every time: a resumed step, held-out evaluation); `reference` samples
        from pi_ref. Weights sharded over processes (FSDP2, ZeRO-3) gather inside every layer's forward:
        each process then keeps generating until all have finished (`synced_gpus`), so the collectives meet."""
        repeated = [p for p in prompts for _ in range(num_generations)]
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            sampler = self.reference() if reference else contextlib.nullcontext(self.policy)
            with root_gathered(self.root), sampler as model:
                return generate_responses(model, self.tokenizer, repeated, max_new_tokens, temperature,
                                          max_prompt_length=max_prompt_length,
                                          synced_gpus=weights_sharded(self.root) and not reference_is_copy(self, reference))

    def logprobs(self, rollout: Rollout, temperature: float, *, reference: bool = False,
                 batch_size: int | None = None, entropy: bool = False):
        """log pi(y_t | x, y_<t) at temperature T, (B, R), 0 on padding (with `entropy`: and the policy's
        entropy per token, (B, R), without gradients). pi_ref never carries gradients; pi_theta does when
        they are enabled (an update), so the caller wraps a no-grad pass itself."""
        if reference:
            with torch.no_grad(), root_gathered(self.root), self.reference() as ref:
                return response_logprobs(ref, rollout, temperature, batch_size, entropy=entropy)
        return response_logprobs(self.root if self.root is not None else self.policy, rollout, temperature,
                                 batch_size, entropy=entropy)


def weights_sharded(root) -> bool:
    """Whether `root`'s weights are split over several processes (FSDP2, DeepSpeed ZeRO-3)."""
    if root is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return False
    from torch.distributed.fsdp import FSDPModule

    return (torch.distributed.get_world_size() > 1
            and (isinstance(root, FSDPModule) or any(hasattr(p, "ds_id") for p in root.parameters())))


def reference_is_copy(pair: PolicyPair, reference: bool) -> bool:
    """pi_ref as its own frozen copy: never prepared, so never sharded."""
    return reference and pair.ref_model is not None


@contextlib.contextmanager
def root_gathered(root):
    """Under FSDP2: the root unit's own parameters (embeddings, final norm, head: what no decoder-layer unit
    holds) gathered whole, for a pass that does not enter through the root's forward: sampling (generate)
    and pi_ref's log-probs (the backbone, called directly). Decoder layers gather themselves in their own
    hooks. Without it the embedding meets a sharded weight (seen on an H200: `align ppo` under
    configs/accelerate_fsdp.yaml). Passes without gradients only. Any other module: nothing happens."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(root, FSDPModule):
        yield
        return
    # FSDP2 makes the first unit whose forward runs the root. Sampling comes before any forward through
    # the real root, so initialise it as the root first (torch has no public call for this).
    root._get_fsdp_state()._lazy_init()
    root.unshard()
    try:
        yield
    finally:
        root.reshard()


def refuse_sharded_engines(command: str) -> None:
    """One line, before anything is written, where the engine the launch asked for cannot run `command`
    (accelerate turns FSDP and DeepSpeed on for GPUs only: CPU processes run plain data parallel).

    Every on-policy trainer trains through the module accelerate prepared (align/onpolicy/engine.py), so
    DDP, FSDP2 and DeepSpeed each reduce and shard its gradients themselves: none is refused today. The
    hook stays where a limit of an engine would be stated, in the engine's own words.
    """
    from prefloop.distributed import sharded_engines_requested
    from prefloop.hardware import detect

    for engine in sharded_engines_requested():
        reason = ENGINE_LIMITS.get((command, engine))
        if reason and detect().device != "cpu":
            raise InputError(f"{command} does not run under {engine}: {reason}")


ENGINE_LIMITS: dict[tuple[str, str], str] = {}  # (command, engine) -> the engine's reason


def load_policy_pair(cfg, device=None, prompts: list = (), need_reference: bool = True) -> PolicyPair:
    """pi_theta (LoRA-wrapped with --lora) and pi_ref, fp32 weights, dropout off; `prompts` are checked
    against the tokenizer (a conversation needs a chat template). `need_reference=False` (GRPO with
    beta = 0) loads no frozen copy for full fine-tuning: a second model's memory and load time for nothing.

    Dropout off: log pi must be the same at rollout and at update [N-details].
    """
    from trl.trainer.utils import disable_dropout_in_model

    from align.train_common import lora_config
    from prefloop.models import load_causal_lm

    policy, tokenizer = load_causal_lm(cfg.model, dtype=torch.float32, device=device)
    if not tokenizer.chat_template and any(not isinstance(p, str) for p in prompts):
        raise InputError(f"model {cfg.model}: its tokenizer has no chat template, so it cannot answer "
                         "conversation prompts; give plain-text prompts (a 'text' column)")
    ref_model = None
    if cfg.lora:
        from peft import get_peft_model

        torch.manual_seed(cfg.seed)  # the adapter's initialisation
        try:
            policy = get_peft_model(policy, lora_config(cfg))
        except ValueError as err:  # e.g. target modules not found in this architecture
            raise InputError(f"model {cfg.model}: cannot add LoRA ({str(err).splitlines()[0]})") from err
    elif need_reference:
        ref_model, _ = load_causal_lm(cfg.model, dtype=torch.float32, device=device)
        ref_model.eval().requires_grad_(False)
    disable_dropout_in_model(policy)
    return PolicyPair(policy, ref_model, tokenizer)


# ---------------------------------------------------------------------------
# prompts and rewards
# ---------------------------------------------------------------------------


class PromptSchedule:
    """Which prompts step `step` uses: a fixed function of the step (a resumed run sees the same ones),
    each pass over the prompts a fresh permutation, each process its own slice of the global batch."""

    def __init__(self, prompts: list, batch_size: int, seed: int, num_processes: int = 1, process_index: int = 0):
        self.prompts, self.batch_size, self.seed = prompts, batch_size, seed
        self.num_processes, self.process_index = num_processes, process_index
        self._orders: dict[int, list[int]] = {}

    def batch(self, step: int) -> list:
        n, B = len(self.prompts), self.batch_size
        first = (step * self.num_processes + self.process_index) * B
        return [self.prompts[self._order(k // n)[k % n]] for k in range(first, first + B)]

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            # keep two epochs: a batch can straddle the boundary between them
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = torch.randperm(len(self.prompts), generator=generator).tolist()
        return self._orders[epoch]


def load_reward(spec: str, probe_prompt, device=None):
    """The reward callable `(prompts, responses) -> list[float]`, probed on one response so that a broken
    one fails before anything is written."""
    from reward_model.scorer import load_reward as load

    reward_fn = load(spec, device=device)
    score(reward_fn, spec, [probe_prompt], [""])
    return reward_fn


def score(reward_fn, spec: str, prompts: list, responses: list[str]) -> torch.Tensor:
    """r(x, y) per response, (B,) float32; one number per response or one clear line."""
    from align.prompts import as_conversation

    return check_scores(spec, reward_fn([as_conversation(p) for p in prompts], responses), len(responses))


def check_scores(spec: str, scores, n: int) -> torch.Tensor:
    """`scores` as a (n,) float32 tensor when they are n finite numbers; else one line naming `spec`."""
    if len(scores) != n or not all(isinstance(s, (int, float)) or hasattr(s, "item") for s in scores):
        raise InputError(f"reward {spec}: expected one number per response, got {scores!r} for "
                         f"{n} response{'s' if n != 1 else ''}")
    values = [float(s) for s in scores]
    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
    if bad is not None:  # one NaN would reach every weight through the advantages and the gradient
        raise InputError(f"reward {spec}: response {bad + 1} scored {values[bad]}; a reward must be a finite number")
    return torch.tensor(values, dtype=torch.float32)


def load_prompts(cfg, held_out_file: str | None = None) -> tuple[list, list, dict]:
    """(training prompts, held-out prompts, source): --prompts FILE, or --store + --project split by prompt
    exactly as `labeling export --test-fraction` splits (cfg.test_fraction, cfg.split_seed). Held out:
    `held_out_file`, else the export's X.test.jsonl beside --prompts X.train.jsonl, else the store's test
    side; a prompt file is never split again."""
    from align.prompts import load_prompts as read
    from align.prompts import store_prompt_splits
    from prefloop.data import test_companion

    if cfg.prompts:
        prompts, source = read(cfg.prompts, limit=cfg.max_prompts)
        held_out_file = held_out_file or test_companion(cfg.prompts)
        held_out = read(held_out_file)[0] if held_out_file else []
    else:  # the store: labeling export's own split by prompt
        prompts, held_out, source = store_prompt_splits(cfg.store, cfg.project, cfg.test_fraction, cfg.split_seed)
        if not prompts:
            raise InputError(f"{cfg.project}: no prompts found")
        prompts = prompts[: cfg.max_prompts] if cfg.max_prompts else prompts
        if held_out_file:
            held_out = read(held_out_file)[0]
    return prompts, held_out, {**source, "num_prompts": len(prompts),
                               "eval_prompts": str(held_out_file) if held_out_file else None}


# ---------------------------------------------------------------------------
# several processes (accelerate launch)
# ---------------------------------------------------------------------------


PROCESS_SEED_STRIDE = 1_000_003  # seed + stride * shard: each shard of the global batch samples its own noise


def shard_seed(seed: int, step: int, shard: int) -> int:
    """The sampling noise (and minibatch order) of one shard of step `step`'s global batch: a function of
    the shard's place, not of the process holding it, so N processes sample what one process with N
    shards samples, and a resumed step samples what the first run did."""
    return seed + step + PROCESS_SEED_STRIDE * shard


# ---------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------


def save_checkpoint(accelerator, run, step: int, save_total_limit: int) -> None:
    """OUT/checkpoints/checkpoint-`step`: accelerate's state (model, optimizer, registered objects, RNG),
    written aside and renamed in; only the newest `save_total_limit` are kept."""
    from prefloop.run import list_checkpoints

    final = run.checkpoint_dir(step)
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=False)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(run.checkpoints_dir)[:-save_total_limit]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator, run) -> int:
    """Restore the last checkpoint (--resume); -> the step to continue from (0 when there is none)."""
    last = run.last_checkpoint()
    if last is None:
        if run.resume and accelerator.is_main_process:
            print(f"[prefloop] --resume: no checkpoint in {run.checkpoints_dir}, starting from step 0")
        return 0
    accelerator.load_state(str(last))
    step = json.loads((last / "trainer_state.json").read_text())["step"]
    if accelerator.is_main_process:
        print(f"[prefloop] resumed from {last} at step {step}")
    return step
