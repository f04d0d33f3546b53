"""`align ppo`: PPO with a KL penalty against a reward model, read top to bottom against the papers.

One iteration (`PPOTrainer.step`), after Ziegler et al. 2019 and Ouyang et al. 2022:

  1. rollout     y ~ pi_theta(. | x) for a batch of prompts x (KV cache, temperature T, stop at EOS)
  2. score       r(x, y) from the reward model; non-terminated responses penalised; optional
                 running normalisation and clipping
  3. old passes  log pi_old(y_t), V_old(s_t) and log pi_ref(y_t), all without gradients
  4. rewards     R_t = -beta * KL_t, plus r(x, y) at the last token          [Ziegler eq. 2]
  5. advantages  GAE(gamma, lambda), whitened                                [GAE eq. 16]
  6. update      K epochs over minibatches: clipped surrogate + c_1 * clipped value loss
                 (- c_2 * entropy), gradient accumulation, gradient clipping [PPO eq. 7, 9]
  7. beta        the Ziegler controller moves beta towards the target KL (if adaptive)
  8. log         score, KL (k1/k2/k3), entropy, clipfrac, approx_kl, value loss, explained
                 variance, response length, beta, phase timings

The equations live in `align.ppo_core`, sampling in `align.rollout`. The policy and the
critic sit in one `ActorCritic` module so that one DDP wrapper (accelerate, several
processes) averages both gradients. The critic is a value head on the policy or a
separate model initialised from the reward model: see `align.ppo_config` for the
trade-off. With LoRA the reference policy is the same weights with the adapter
disabled; with full fine-tuning it is a frozen copy of the initial weights.

Launch:  align ppo --config configs/ppo.yaml
         accelerate launch --config_file configs/accelerate_ddp.yaml -m align.ppo_trainer --config configs/ppo.yaml
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from align.ppo_config import PPOConfig
from align.ppo_core import (
    KL_ESTIMATORS,
    LOSSES,
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    compute_gae,
    entropy_from_logits,
    explained_variance,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
    shape_scores,
)
from align.prompts import as_conversation, load_prompts
from align.rollout import causal_lm_parts, generate_responses, response_hidden_states, token_logprobs
from prefloop.errors import InputError

METADATA_FILE = "prefloop_ppo.json"


def main(argv: list[str] | None = None) -> int:
    from prefloop.config import parse_config
    from prefloop.models import check_model

    cfg = parse_config(PPOConfig, argv, prog="align ppo")
    check_model(cfg.model)  # before the reward model loads: a typo costs no time
    PPOTrainer.from_config(cfg).train()
    return 0


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------


class ActorCritic(nn.Module):
    """pi_theta (a causal LM, maybe with LoRA) and V(s_t) in one module.

    forward -> (logits (B, R, V) at temperature T, values (B, R)), both at the positions
    that predict the R response tokens: V(s_t) is read where pi(y_t | s_t) is.
    """

    def __init__(self, policy: nn.Module, critic: nn.Module | None = None):
        super().__init__()
        self.policy = policy
        self.critic = critic  # a separate sequence-classification model, or None
        # Zero-initialised: the value head starts from V = 0 rather than from noise.
        hidden_size = policy.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden_size, 1) if critic is None else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, response_start: int, temperature: float):
        backbone, lm_head = causal_lm_parts(self.policy)
        hidden = response_hidden_states(backbone, input_ids, attention_mask, response_start)  # (B, R, H)
        logits = lm_head(hidden) / temperature  # (B, R, V)
        if self.critic is None:
            values = self.value_head(hidden.float()).squeeze(-1)  # (B, R)
        else:
            c_hidden = response_hidden_states(self.critic.base_model, input_ids, attention_mask, response_start)
            values = self.critic.score(c_hidden).float().squeeze(-1)  # (B, R)
        return logits, values


def load_policy(cfg: PPOConfig, device):
    """(policy, reference or None, tokenizer). With LoRA the reference is the adapter switched off."""
    from prefloop.models import load_causal_lm

    policy, tokenizer = load_causal_lm(cfg.model, dtype=torch.float32, device=device)
    if not cfg.lora:
        ref_model, _ = load_causal_lm(cfg.model, dtype=torch.float32, device=device)
        ref_model.eval().requires_grad_(False)
        return policy, ref_model, tokenizer
    from peft import LoraConfig, get_peft_model

    targets = "all-linear" if cfg.lora_target_modules == ["all-linear"] else cfg.lora_target_modules
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    try:
        policy = get_peft_model(policy, lora)
    except ValueError as err:  # e.g. target modules not found in this architecture
        raise InputError(f"model {cfg.model}: cannot add LoRA ({str(err).splitlines()[0]})") from err
    return policy, None, tokenizer


def load_critic(cfg: PPOConfig, tokenizer, device):
    """The separate critic: the reward model's backbone and scalar head, trained as V(s_t).

    The reward model's normalisation r = (head - offset) / scale (and the mean over an
    ensemble's heads) is folded into a new one-output head, so the critic starts out
    predicting, at every token, the normalised reward the full response would get.
    """
    if cfg.critic != "reward_model":
        return None
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefloop.models import resolve_model

    path = resolve_model(cfg.critic_model)
    try:
        critic = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        critic_vocab = AutoTokenizer.from_pretrained(path).get_vocab()
    except (OSError, ValueError) as err:
        raise InputError(f"critic model {cfg.critic_model}: cannot be loaded ({str(err).splitlines()[0]})") from err
    if not isinstance(getattr(critic, "score", None), nn.Linear):
        raise InputError(f"critic model {cfg.critic_model}: needs a decoder with a linear 'score' head "
                         f"(got {type(critic).__name__})")
    if critic_vocab != tokenizer.get_vocab():
        raise InputError(f"critic model {cfg.critic_model}: its tokenizer differs from the policy's; "
                         "the critic reads the policy's token ids")
    heads = critic.config.num_labels
    offset = torch.tensor(getattr(critic.config, "reward_offset", None) or [0.0] * heads)  # (H,)
    scale = torch.tensor(getattr(critic.config, "reward_scale", None) or [1.0] * heads)  # (H,)
    old = critic.score
    head = nn.Linear(old.in_features, 1, bias=True, dtype=torch.float32)
    with torch.no_grad():
        bias = old.bias if old.bias is not None else torch.zeros(heads)
        head.weight.copy_((old.weight / scale[:, None]).mean(0, keepdim=True))
        head.bias.copy_(((bias - offset) / scale).mean().reshape(1))
    critic.score = head
    critic.config.num_labels = 1
    return critic.to(device)


def load_reward_function(spec: str, device=None):
    """callable(prompts: list[conversation], responses: list[str]) -> list[float]."""
    from reward_model.scorer import load_reward

    return load_reward(spec, device=device)


# ---------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------


class PPOTrainer:
    def __init__(self, cfg: PPOConfig, accelerator, model, ref_model, tokenizer, optimizer,
                 reward_fn, prompts: list, prompt_source: dict):
        self.cfg, self.accelerator, self.model, self.ref_model = cfg, accelerator, model, ref_model
        self.tokenizer, self.optimizer, self.reward_fn = tokenizer, optimizer, reward_fn
        self.prompts, self.prompt_source = prompts, prompt_source
        self.kl_ctl = (AdaptiveKLController(cfg.beta, cfg.target_kl, cfg.kl_horizon) if cfg.adaptive_kl
                       else FixedKLController(cfg.beta))
        self.score_moments = RunningMoments()
        accelerator.register_for_checkpointing(self.kl_ctl, self.score_moments)
        self.micro_batch_size = cfg.mini_batch_size // cfg.gradient_accumulation_steps
        self._orders: dict[int, list[int]] = {}

    @classmethod
    def from_config(cls, cfg: PPOConfig) -> "PPOTrainer":
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from accelerate.utils import set_seed

        from prefloop.hardware import detect

        hw = detect()
        # Weights stay fp32 (Adam's master copy); bf16/fp16 hardware gets autocast.
        mixed = hw.precision if hw.precision != "fp32" else "no"
        # A previous Accelerator in this Python process (a test, a notebook) fixed its own
        # precision; start afresh, as transformers' TrainingArguments does. The process group
        # (PartialState) is kept.
        AcceleratorState._reset_state()
        accelerator = Accelerator(mixed_precision=mixed, cpu=hw.device == "cpu")
        if accelerator.is_main_process:
            print(f"[prefloop] hardware: {hw.describe()}; fp32 weights, autocast {mixed}; "
                  f"{accelerator.num_processes} process(es)")
        _check_output_dir(cfg)
        # Cheap inputs first: a bad prompt file or reward spec fails before any model loads.
        prompts, source = load_prompts(cfg.prompts, store=cfg.store, project=cfg.project, limit=cfg.max_prompts)
        reward_fn = load_reward_function(cfg.reward, accelerator.device)
        set_seed(cfg.seed, device_specific=True)  # seed + rank: each process samples its own responses
        policy, ref_model, tokenizer = load_policy(cfg, accelerator.device)
        if tokenizer.chat_template is None and any(not isinstance(p, str) for p in prompts):
            raise InputError(f"model {cfg.model}: its tokenizer has no chat template, so it cannot answer "
                             "conversation prompts; give plain-text prompts (a 'text' column)")
        model = ActorCritic(policy, load_critic(cfg, tokenizer, accelerator.device)).to(accelerator.device)
        model.eval()  # no dropout anywhere: log pi must be the same at rollout and at update [N-details]
        params = [p for p in model.parameters() if p.requires_grad]
        # The fused kernel updates all tensors in one pass (fp32 master weights, CPU or CUDA).
        fused = torch.device(accelerator.device).type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, eps=cfg.adam_eps, weight_decay=0.0, fused=fused)
        model, optimizer = accelerator.prepare(model, optimizer)
        return cls(cfg, accelerator, model, ref_model, tokenizer, optimizer, reward_fn, prompts, source)

    @property
    def unwrapped(self) -> ActorCritic:
        return self.accelerator.unwrap_model(self.model)

    # -- the loop ---------------------------------------------------------------------------

    def train(self) -> Path:
        from tqdm.auto import tqdm

        from prefloop.metrics import MetricsLogger

        cfg, acc = self.cfg, self.accelerator
        start = self.load_checkpoint() if cfg.resume else 0
        logger = MetricsLogger(cfg.output_dir) if acc.is_main_process else None
        bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="ppo",
                   disable=not acc.is_main_process, dynamic_ncols=True)
        for step in bar:
            if cfg.lr_schedule == "linear":  # CleanRL's anneal_lr: frac = 1 - step / steps
                for group in self.optimizer.param_groups:
                    group["lr"] = (1.0 - step / cfg.steps) * cfg.learning_rate
            stats, samples = self.step(self.batch_prompts(step))
            if logger is not None:
                logger.log(step, stats)
                bar.set_postfix(score=f"{stats['score']:.3f}", kl_k1=f"{stats['kl_k1']:.3f}",
                                beta=f"{stats['beta']:.3g}", len=f"{stats['response_length']:.1f}")
                if cfg.sample_every and step % cfg.sample_every == 0:
                    self.log_samples(step, samples, logger, bar)
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                self.save_checkpoint(step + 1)
        if logger is not None:
            logger.close()
        return self.save_policy()

    def step(self, prompts: list) -> tuple[dict[str, float], list[dict]]:
        """One PPO iteration on this process's batch of prompts. -> (metrics, samples)."""
        cfg, acc = self.cfg, self.accelerator
        timer = _Timer(acc.device)

        # 1. rollout: y ~ pi_theta(. | x), sampled with the KV cache at temperature T
        with timer("rollout"), acc.autocast():
            rollout = generate_responses(self.unwrapped.policy, self.tokenizer, prompts, cfg.max_new_tokens,
                                         cfg.temperature, max_prompt_length=cfg.max_prompt_length)
        mask = rollout.response_mask.float()  # (B, R)

        # 2. score: r(x, y), the penalty for never emitting EOS, optional normalisation and clipping
        with timer("score"):
            raw_scores = self.score(prompts, rollout.texts)  # (B,)
            scores = self.shape_scores(raw_scores, rollout.terminated)

        # 3. log pi_old, V_old and log pi_ref of the sampled tokens (no gradients)
        with timer("ref_value"), acc.autocast():
            old_logprobs, old_values, entropy = self.policy_pass(rollout)  # (B, R) each
            ref_logprobs = self.reference_pass(rollout)  # (B, R)

        # 4. rewards: R_t = -beta * KL_t, plus r(x, y) at the last token [Ziegler eq. 2]
        beta = self.kl_ctl.value
        rewards, kl = kl_penalised_rewards(scores, old_logprobs, ref_logprobs, mask, beta, cfg.kl_estimator)

        # 5. advantages: GAE(gamma, lambda) [GAE eq. 16], whitened [N-details]
        advantages, returns = compute_gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, mask)

        # 6. K epochs of clipped-surrogate updates over minibatches [PPO Alg. 1]
        with timer("train"):
            update = self.ppo_update(rollout, old_logprobs, old_values, advantages, returns)

        # 7. beta: the Ziegler controller sees the batch's KL, averaged over processes
        kl_per_response = acc.reduce(kl.sum(1).mean(), "mean").item()
        self.kl_ctl.update(kl_per_response, cfg.batch_size * acc.num_processes)

        # 8. metrics, averaged over processes
        with torch.no_grad():
            lengths = rollout.response_lengths.float()
            stats = {
                "score": raw_scores.mean(), "score_shaped": scores.mean(),
                **{f"kl_{k}": (fn(old_logprobs, ref_logprobs) * mask).sum(1).mean() for k, fn in KL_ESTIMATORS.items()},
                "non_score_reward": -beta * kl.sum(1).mean(), "rlhf_reward": (scores - beta * kl.sum(1)).mean(),
                "entropy": masked_mean(entropy, mask), "response_length": lengths.mean(),
                "terminated": rollout.terminated.float().mean(), "advantages_mean": masked_mean(advantages, mask),
                "returns_mean": masked_mean(returns, mask), "values_mean": masked_mean(old_values, mask),
                "explained_variance": explained_variance(old_values, returns, mask), **update,
            }
            stats = self._reduce(stats)
        stats.update(beta=beta, beta_next=self.kl_ctl.value, lr=self.optimizer.param_groups[0]["lr"],
                     tokens=acc.reduce(lengths.sum(), "sum").item(), **timer.totals())
        samples = [{"prompt": as_conversation(p), "response": t, "score": s}
                   for p, t, s in zip(prompts, rollout.texts, raw_scores.tolist())]
        return stats, samples

    # -- 2. score ------------------------------------------------------------------------------

    def score(self, prompts: list, texts: list[str]) -> torch.Tensor:
        scores = self.reward_fn([as_conversation(p) for p in prompts], texts)
        if len(scores) != len(texts):
            raise InputError(f"reward {self.cfg.reward}: returned {len(scores)} scores for {len(texts)} responses")
        return torch.tensor([float(s) for s in scores], dtype=torch.float32, device=self.accelerator.device)

    def shape_scores(self, scores: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
        cfg, moments = self.cfg, None
        if cfg.score_norm:  # moments over every process's scores (after the EOS penalty), so all ranks agree
            penalised = shape_scores(scores, terminated, cfg.missing_eos_penalty)
            self.score_moments.update(self.accelerator.gather(penalised))
            moments = self.score_moments
        return shape_scores(scores, terminated, cfg.missing_eos_penalty, moments, cfg.score_clip)

    # -- 3. passes without gradients -----------------------------------------------------------

    @torch.no_grad()
    def policy_pass(self, rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi_old (B, R), V_old (B, R) and the policy's entropy (B, R) on the rollout."""
        model, B, R = self.unwrapped, len(rollout), rollout.response_ids.shape[1]
        out = [torch.zeros(B, R, device=self.accelerator.device) for _ in range(3)]
        for idx in torch.arange(B).split(self.micro_batch_size):
            mb = _micro_batch(rollout, idx)
            logits, values = model(mb["input_ids"], mb["attention_mask"], mb["response_start"], self.cfg.temperature)
            r = mb["response_ids"].shape[1]
            out[0][idx, :r] = token_logprobs(logits, mb["response_ids"])
            out[1][idx, :r] = values
            out[2][idx, :r] = entropy_from_logits(logits.float())
        mask = rollout.response_mask.float()
        return out[0] * mask, out[1] * mask, out[2] * mask

    @torch.no_grad()
    def reference_pass(self, rollout) -> torch.Tensor:
        """log pi_ref (B, R): the frozen initial weights, or the same weights with LoRA switched off."""
        policy = self.unwrapped.policy
        lm = self.ref_model if self.ref_model is not None else policy
        adapter_off = policy.disable_adapter() if self.ref_model is None else contextlib.nullcontext()
        backbone, lm_head = causal_lm_parts(lm)
        B, R = len(rollout), rollout.response_ids.shape[1]
        ref_logprobs = torch.zeros(B, R, device=self.accelerator.device)
        with adapter_off:
            for idx in torch.arange(B).split(self.micro_batch_size):
                mb = _micro_batch(rollout, idx)
                hidden = response_hidden_states(backbone, mb["input_ids"], mb["attention_mask"], mb["response_start"])
                logits = lm_head(hidden) / self.cfg.temperature  # (b, r, V)
                ref_logprobs[idx, :mb["response_ids"].shape[1]] = token_logprobs(logits, mb["response_ids"])
        return ref_logprobs * rollout.response_mask

    # -- 6. the PPO update ---------------------------------------------------------------------

    def ppo_update(self, rollout, old_logprobs, old_values, advantages, returns) -> dict[str, torch.Tensor]:
        cfg, acc = self.cfg, self.accelerator
        per_token = {"old_logprobs": old_logprobs, "old_values": old_values,
                     "advantages": advantages, "returns": returns}
        history: dict[str, list[torch.Tensor]] = {}
        tokens_trained = 0  # (prompt + response) positions through forward and backward
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(len(rollout))
            for minibatch in order.split(cfg.mini_batch_size):
                micro_batches = minibatch.split(self.micro_batch_size)
                for i, idx in enumerate(micro_batches):
                    # DDP all-reduces gradients only on the last micro-batch of the minibatch.
                    sync = i == len(micro_batches) - 1
                    with contextlib.nullcontext() if sync else acc.no_sync(self.model):
                        mb = _micro_batch(rollout, idx, per_token)
                        loss, stats = self.loss(mb)
                        acc.backward(loss / len(micro_batches))
                    tokens_trained += mb["input_ids"].numel()
                    for key, value in stats.items():
                        history.setdefault(key, []).append(value.detach())
                grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                history.setdefault("grad_norm", []).append(torch.as_tensor(grad_norm, dtype=torch.float32).detach())
        return {**{key: torch.stack(values).mean() for key, values in history.items()},
                "tokens_trained": torch.tensor(float(tokens_trained))}

    def loss(self, mb: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L = L_clip + c_1 * L_V - c_2 * H   [PPO eq. 9], on one micro-batch."""
        cfg = self.cfg
        logits, values = self.model(mb["input_ids"], mb["attention_mask"], mb["response_start"], cfg.temperature)
        logprobs = token_logprobs(logits, mb["response_ids"])  # (b, r)
        mask = mb["response_mask"].float()
        pg_loss, pg_stats = LOSSES["policy"](logprobs, mb["old_logprobs"], mb["advantages"], mask, cfg.cliprange)
        vf_loss, vf_stats = LOSSES["value"](values, mb["old_values"], mb["returns"], mask, cfg.cliprange_value)
        loss = pg_loss + cfg.vf_coef * vf_loss
        if cfg.ent_coef:  # the entropy of a (b, r, V) tensor is only worth its graph when it is used
            loss = loss - cfg.ent_coef * masked_mean(entropy_from_logits(logits.float()), mask)
        with torch.no_grad():
            ratio = masked_mean(torch.exp(logprobs - mb["old_logprobs"]), mask)
        return loss, {"policy_loss": pg_loss.detach(), "value_loss": vf_loss.detach(), "ratio": ratio,
                      **pg_stats, **vf_stats}

    # -- data ----------------------------------------------------------------------------------

    def batch_prompts(self, step: int) -> list:
        """This process's prompts for `step`: a fixed function of the step, so a resumed run sees
        the same prompts; each epoch over the prompts is a fresh permutation."""
        n, B = len(self.prompts), self.cfg.batch_size
        first = (step * self.accelerator.num_processes + self.accelerator.process_index) * B
        return [self.prompts[self._order(k // n)[k % n]] for k in range(first, first + B)]

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
            # keep two epochs: a batch can straddle the boundary between them
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = torch.randperm(len(self.prompts), generator=generator).tolist()
        return self._orders[epoch]

    def _reduce(self, stats: dict) -> dict[str, float]:
        keys = list(stats)
        values = torch.stack([torch.as_tensor(stats[k], dtype=torch.float32, device=self.accelerator.device)
                              for k in keys])
        values = self.accelerator.reduce(values, "mean")
        return dict(zip(keys, values.tolist()))

    # -- logging -------------------------------------------------------------------------------

    def log_samples(self, step: int, samples: list[dict], logger, bar) -> None:
        """A table of generations: console, TensorBoard, and samples.jsonl (full text)."""
        rows = samples[: self.cfg.num_samples]
        bar.write(f"\nstep {step}: sample generations")
        bar.write(f"{'score':>8}  {'prompt':<40}  response")
        for row in rows:
            bar.write(f"{row['score']:8.3f}  {_one_line(row['prompt'][-1]['content'], 40):<40}  "
                      f"{_one_line(row['response'], 80)}")
        table = "| score | prompt | response |\n|---|---|---|\n" + "\n".join(
            f"| {r['score']:.3f} | {_md_cell(r['prompt'][-1]['content'])} | {_md_cell(r['response'])} |" for r in rows)
        logger.log_text(step, "samples", table)
        with (Path(self.cfg.output_dir) / "samples.jsonl").open("a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({"step": step, **row}, ensure_ascii=False) + "\n")

    # -- checkpoints and the final model ----------------------------------------------------------

    def save_checkpoint(self, completed_steps: int) -> None:
        """Model, optimizer, RNG states, beta and score moments; written aside, then swapped in."""
        acc, final = self.accelerator, self.cfg.checkpoint_dir
        tmp = final.with_name(final.name + ".tmp")
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=False)
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / "trainer_state.json").write_text(json.dumps({"step": completed_steps}))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        acc.wait_for_everyone()

    def load_checkpoint(self) -> int:
        """Restore the last checkpoint; -> the step to continue from (0 when there is none)."""
        ckpt = self.cfg.checkpoint_dir
        if not (ckpt / "trainer_state.json").exists():
            if self.accelerator.is_main_process:
                print(f"[prefloop] --resume: no checkpoint in {ckpt}, starting from step 0")
            return 0
        self.accelerator.load_state(str(ckpt))
        step = json.loads((ckpt / "trainer_state.json").read_text())["step"]
        if self.accelerator.is_main_process:
            _truncate_metrics(Path(self.cfg.output_dir) / "metrics.jsonl", step)
            print(f"[prefloop] resumed from {ckpt} at step {step}")
        return step

    def save_policy(self) -> Path:
        """The final policy as a plain transformers model (LoRA merged, or kept as an adapter)."""
        acc, cfg = self.accelerator, self.cfg
        acc.wait_for_everyone()
        out = cfg.policy_dir
        if acc.is_main_process:
            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model = self.unwrapped
            policy = model.policy
            if cfg.lora and cfg.merge_lora:
                policy = policy.merge_and_unload()
            policy.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            if model.critic is not None:
                model.critic.save_pretrained(Path(cfg.output_dir) / "critic")
            (tmp / METADATA_FILE).write_text(json.dumps(self.metadata(), indent=2))
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
            save_plots(Path(cfg.output_dir) / "metrics.jsonl", Path(cfg.output_dir))
            print(f"[prefloop] policy saved to {out}")
        acc.wait_for_everyone()
        return out

    def metadata(self) -> dict:
        from prefloop.config import to_dict
        from prefloop.hardware import detect

        return {"method": "ppo", "base_model": self.cfg.model, "reward": self.cfg.reward,
                "prompts": self.prompt_source, "adapter": self.cfg.lora and not self.cfg.merge_lora,
                "beta_final": self.kl_ctl.value, "precision": detect().precision,
                "num_processes": self.accelerator.num_processes, "config": to_dict(self.cfg)}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _micro_batch(rollout, idx: torch.Tensor, per_token: dict[str, torch.Tensor] | None = None) -> dict:
    """Rows `idx` of a rollout, trimmed to the columns they use: left padding shared by all
    rows and response columns past the longest response are cut (less compute, same result)."""
    prompt_mask = rollout.prompt_mask[idx]
    p0 = prompt_mask.shape[1] - int(prompt_mask.sum(1).max())
    r = int(rollout.response_mask[idx].sum(1).max())
    response_ids, response_mask = rollout.response_ids[idx, :r], rollout.response_mask[idx, :r]
    mb = {
        "input_ids": torch.cat([rollout.prompt_ids[idx, p0:], response_ids], dim=1),  # (b, p + r)
        "attention_mask": torch.cat([prompt_mask[:, p0:], torch.ones_like(response_mask)], dim=1),
        "response_start": prompt_mask.shape[1] - p0,
        "response_ids": response_ids, "response_mask": response_mask,
    }
    for key, value in (per_token or {}).items():
        mb[key] = value[idx, :r]
    return mb


class _Timer:
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


def _check_output_dir(cfg: PPOConfig) -> None:
    if not cfg.resume and (cfg.checkpoint_dir / "trainer_state.json").exists():
        raise InputError(f"{cfg.output_dir}: holds a checkpoint already; pass --resume to continue it "
                         "or choose another --output-dir")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics logged after the checkpoint, so the resumed run does not log steps twice."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] < step))


def _one_line(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _md_cell(text: str) -> str:
    return _one_line(text, 200).replace("|", "\\|").replace("<", "&lt;")


def save_plots(metrics_path: Path, out_dir: Path) -> list[Path]:
    """reward.png (score and KL-penalised reward) and kl.png (KL estimates and beta) per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefloop.metrics import read_metrics

    rows = read_metrics(metrics_path) if metrics_path.exists() else []
    if not rows:
        return []
    steps = [r["step"] for r in rows]
    written = []
    for name, keys, ylabel in (("reward.png", ("score", "rlhf_reward"), "reward"),
                               ("kl.png", ("kl_k1", "kl_k3"), "KL(pi || pi_ref), nats per response")):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for key in keys:
            ax.plot(steps, [r.get(key) for r in rows], label=key)
        if name == "kl.png":
            ax2 = ax.twinx()
            ax2.plot(steps, [r.get("beta") for r in rows], "k--", label="beta")
            ax2.set_ylabel("beta")
        ax.set_xlabel("PPO step")
        ax.set_ylabel(ylabel)
        ax.legend(loc="best")
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    return written


if __name__ == "__main__":  # `accelerate launch -m align.ppo_trainer ...` runs this module as a script
    import sys

    from prefloop.cli import run_main

    raise SystemExit(run_main(main, sys.argv[1:], "align ppo"))
