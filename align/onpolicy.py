"""The on-policy core: what every trainer that samples from its own policy shares (PPO and online DPO
today). Each algorithm file keeps only its own mathematics and loop. A group-sampling trainer takes the
same pieces: `PolicyPair.sample(prompts, G, ...)` gives G responses per prompt, prompt-major, so
`scores.view(P, G)` groups them; `logprobs` gives per-token log pi_theta and log pi_ref with the mask.

    run, acc = start(cfg, "align ppo")                      # layout, resume rule, precision, accelerator
    prompts, held_out, source = load_prompts(cfg)           # held out: the export's X.test.jsonl, if any
    reward_fn = load_reward(cfg.reward_model, prompts[0], acc.device)      # probed once, before training
    pair = load_policy_pair(cfg, acc.device, prompts)       # pi_theta and pi_ref (LoRA: the adapter off)
    model, optimizer = acc.prepare(pair.policy, optimizer)  # (PPO prepares its ActorCritic around it)
    start_step = load_checkpoint(acc, run)                  # 0, or the last checkpoint's step (--resume)
    run.save(**lineage(cfg.model), prompts=source)          # run.json, once the inputs are known good
    schedule = PromptSchedule(prompts, cfg.batch_size, cfg.seed, acc.num_processes, acc.process_index)
    logger = run.metrics_logger()                           # metrics.jsonl + tensorboard/, resume-aware
    for step in range(start_step, cfg.max_steps):
        prompts = schedule.batch(step)                      # a fixed function of the step: resumable
        rollout = pair.sample(prompts, G, cfg.max_new_tokens, cfg.temperature)    # (P*G rows, prompt-major)
        scores = score(reward_fn, cfg.reward_model, [p for p in prompts for _ in range(G)], rollout.texts)
        logp = pair.logprobs(rollout, T)                    # (B, R), with gradients when enabled
        ref_logp = pair.logprobs(rollout, T, reference=True)                       # (B, R), no gradients
        ...                                                 # the algorithm; rollout.response_mask (B, R)
        logger.log(step + 1, stats)                         # steps from 1: step N = N updates done
        logger.flush(); save_checkpoint(acc, run, step + 1, cfg.save_total_limit)
    save_final(pair.policy, pair.tokenizer, cfg, run, results)      # OUT/final + results into run.json

Several processes (`accelerate launch`, prefloop.distributed): `PromptSchedule` gives each process its
own slice of the step's prompts, `average_gradients` averages what the unwrapped policy's backward left,
`mean_over_processes` averages what is logged, and only the main process writes.

The log-prob path itself is `align.rollout.response_logits` (written once); checkpoints are accelerate's
`save_state` (model, optimizer, registered objects, RNG states) under OUT/checkpoints/checkpoint-N.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil

import torch

from align.rollout import Rollout, generate_responses, response_logprobs
from prefloop.errors import InputError


def start(cfg, command: str, sharded_engines: tuple[str, ...] = ()):
    """(run, accelerator): the output directory checked against the resume rule, the precision decided
    (or read back from run.json on --resume) and handed to accelerate as its autocast. A launch under
    FSDP or DeepSpeed not in `sharded_engines` is refused first (`refuse_sharded_engines`)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from prefloop.config import to_dict
    from prefloop.hardware import detect
    from prefloop.run import start_run

    refuse_sharded_engines(command, sharded_engines)
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
    fine-tuning it is a frozen copy of the initial weights.
    """

    def __init__(self, policy, ref_model, tokenizer):
        self.policy, self.ref_model, self.tokenizer = policy, ref_model, tokenizer
        self.root = None  # the module accelerate prepared around the policy, where it differs (PPO's ActorCritic)

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
        untouched (the same noise every time: held-out evaluation); `reference` samples from pi_ref."""
        repeated = [p for p in prompts for _ in range(num_generations)]
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            sampler = self.reference() if reference else contextlib.nullcontext(self.policy)
            with root_gathered(self.root), sampler as model:
                return generate_responses(model, self.tokenizer, repeated, max_new_tokens, temperature,
                                          max_prompt_length=max_prompt_length)

    def logprobs(self, rollout: Rollout, temperature: float, *, reference: bool = False,
                 batch_size: int | None = None) -> torch.Tensor:
        """log pi(y_t | x, y_<t) at temperature T, (B, R), 0 on padding. pi_ref never carries gradients;
        pi_theta does when they are enabled (an update), so the caller wraps a no-grad pass itself."""
        if reference:
            with torch.no_grad(), root_gathered(self.root), self.reference() as ref:
                return response_logprobs(ref, rollout, temperature, batch_size)
        return response_logprobs(self.policy, rollout, temperature, batch_size)


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


def refuse_sharded_engines(command: str, supported: tuple[str, ...] = ()) -> None:
    """One line, before anything is written, where `command` cannot run under the engine it was launched
    with (accelerate turns FSDP and DeepSpeed on for GPUs only: CPU processes run plain data parallel).

    Online DPO and GRPO/RLOO run every pass on the unwrapped policy and average its gradients themselves
    (`average_gradients`): data parallel, each process holding the whole model; FSDP's sharded weights
    break that (on an H200, PPO's first sample failed under FSDP until `root_gathered`; these trainers call
    the policy below the root in their updates too). PPO trains through its prepared ActorCritic and runs
    under FSDP. Under DeepSpeed accelerate's `backward` also steps the optimizer, which no on-policy
    loop here expects (clipping, the finite-gradient check and the step are the loop's own).
    """
    from prefloop.distributed import sharded_engines_requested
    from prefloop.hardware import detect

    refused = [engine for engine in sharded_engines_requested() if engine not in supported]
    if refused and detect().device != "cpu":
        configs = " or ".join(["configs/accelerate_ddp.yaml"] + [f"accelerate_{e.lower()}.yaml" for e in supported])
        raise InputError(f"{command} does not run under {refused[0]}: launch it with {configs}")


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

    scores = reward_fn([as_conversation(p) for p in prompts], responses)
    if len(scores) != len(responses) or not all(isinstance(s, (int, float)) or hasattr(s, "item") for s in scores):
        raise InputError(f"reward {spec}: expected one number per response, got {scores!r} for "
                         f"{len(responses)} response{'s' if len(responses) != 1 else ''}")
    values = [float(s) for s in scores]
    bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
    if bad is not None:  # one NaN would reach every weight through the advantages and the gradient
        raise InputError(f"reward {spec}: response {bad + 1} scored {values[bad]}; a reward must be a finite number")
    return torch.tensor(values, dtype=torch.float32)


def clip_gradients(accelerator, parameters, max_norm: float, losses: dict) -> torch.Tensor:
    """Clip to `max_norm`; a gradient that is not finite is refused before the optimizer applies it.

    Applied, one NaN turns every weight into NaN and the run fails a step later somewhere unrelated
    (sampling from NaN probabilities). `losses`: what to name in the error (this minibatch's terms).
    """
    grad_norm = accelerator.clip_grad_norm_(parameters, max_norm)
    if not torch.isfinite(torch.as_tensor(grad_norm)).all():
        shown = ", ".join(f"{k} {float(v):.4g}" for k, v in losses.items())
        raise FloatingPointError(f"the gradient is not finite (norm {float(grad_norm)}; {shown}); "
                                 "the update was not applied")
    return grad_norm


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


PROCESS_SEED_STRIDE = 1_000_003  # seed + stride * process index: each process samples its own responses


def average_gradients(accelerator, parameters) -> None:
    """Average the gradients of `parameters` over processes: one all-reduce of one flat buffer.

    Online DPO and GRPO/RLOO run the log-prob path on the unwrapped policy (sampling, the adapter
    switched off for pi_ref, the one `response_logits`), so DDP's hooks, which fire only for a forward
    through its wrapper, never average their gradients; this does, before clipping. A parameter without
    a gradient (a process with nothing to learn from this step) counts as zero, so every process joins.
    """
    if accelerator.num_processes == 1:
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    params = [p for p in parameters if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    flat /= accelerator.num_processes
    for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
        p.grad = g


def mean_over_processes(accelerator, stats: dict, sums: tuple[str, ...] = ()) -> dict[str, float | None]:
    """Each metric averaged over the processes that measured it (None: not measured here), counts named
    in `sums` summed, in one all-reduce: what the main process logs describes the global batch. A key
    that only some processes have (a grader named by some rows only) counts as not measured elsewhere."""
    if accelerator.num_processes > 1:  # the same keys, in the same order, everywhere
        every: list = [None] * accelerator.num_processes
        torch.distributed.all_gather_object(every, list(stats))
        stats = {k: stats.get(k) for k in dict.fromkeys(k for keys in every for k in keys)}
    values = torch.tensor([float("nan") if stats[k] is None else float(stats[k]) for k in stats],
                          dtype=torch.float64, device=accelerator.device)  # (M,)
    present = ~values.isnan()
    totals = accelerator.reduce(torch.stack([values.nan_to_num(0.0), present.double()]), "sum")  # (2, M)
    means = totals[0] / totals[1]
    return {k: (totals[0, i].item() if k in sums else means[i].item()) if totals[1, i] > 0 else None
            for i, k in enumerate(stats)}


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
