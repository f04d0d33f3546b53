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

The equations live in `align.ppo_core`; what every on-policy trainer shares (policy and reference,
prompts, reward, checkpoints, run directory, precision) in `align.onpolicy`; the critic (`ActorCritic`:
policy and V in one module, so one DDP wrapper averages both gradients) in `align.critic`; sample tables,
timings and plots in `align.reporting`.

Launch:  align ppo --config configs/ppo.yaml          (or --config ppo_quick: minutes on a CPU)
         accelerate launch --config_file configs/accelerate_ddp.yaml -m align.ppo_trainer --config configs/ppo.yaml
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from align import onpolicy
from align.critic import ActorCritic, load_critic
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
from align.prompts import as_conversation
from align.reporting import StepTimer, log_samples, save_plots
from align.rollout import micro_batch, token_logprobs


def main(argv: list[str] | None = None) -> int:
    from prefloop.config import parse_config
    from prefloop.models import check_model

    cfg = parse_config(PPOConfig, argv, prog="align ppo")
    check_model(cfg.model)  # before the reward model loads: a typo costs no time
    PPOTrainer.from_config(cfg).train()
    return 0


class PPOTrainer:
    def __init__(self, cfg: PPOConfig, accelerator, run, model, pair, optimizer, reward_fn, prompts: list):
        self.cfg, self.accelerator, self.run, self.model = cfg, accelerator, run, model
        self.pair, self.optimizer, self.reward_fn = pair, optimizer, reward_fn
        self.kl_ctl = (AdaptiveKLController(cfg.beta, cfg.target_kl, cfg.kl_horizon) if cfg.adaptive_kl
                       else FixedKLController(cfg.beta))
        self.score_moments = RunningMoments()
        accelerator.register_for_checkpointing(self.kl_ctl, self.score_moments)
        self.micro_batch_size = cfg.mini_batch_size // cfg.gradient_accumulation_steps
        self.schedule = onpolicy.PromptSchedule(prompts, cfg.batch_size, cfg.seed, accelerator.num_processes,
                                                accelerator.process_index)

    @classmethod
    def from_config(cls, cfg: PPOConfig) -> "PPOTrainer":
        from accelerate.utils import set_seed

        from prefloop.run import lineage

        run, accelerator = onpolicy.start(cfg, "align ppo", sharded_engines=("FSDP",))
        # Cheap inputs first: a bad prompt file or reward spec fails before any model loads.
        prompts, _, source = onpolicy.load_prompts(cfg)
        reward_fn = onpolicy.load_reward(cfg.reward_model, prompts[0], accelerator.device)
        pair = onpolicy.load_policy_pair(cfg, accelerator.device, prompts)  # seeds the LoRA init with cfg.seed
        set_seed(cfg.seed, device_specific=True)  # then seed + rank: each process samples its own responses
        model = ActorCritic(pair.policy, load_critic(cfg, pair.tokenizer, accelerator.device)).to(accelerator.device)
        model.eval()  # no dropout anywhere: log pi must be the same at rollout and at update [N-details]
        params = [p for p in model.parameters() if p.requires_grad]
        # The fused kernel updates all tensors in one pass (fp32 master weights, CPU or CUDA).
        fused = torch.device(accelerator.device).type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, eps=cfg.adam_eps, weight_decay=0.0, fused=fused)
        model, optimizer = accelerator.prepare(model, optimizer)
        pair.root = model  # FSDP: sampling and pi_ref's pass gather the root's own weights (onpolicy.root_gathered)
        if accelerator.is_main_process:
            run.save(**lineage(cfg.model), prompts=source, reward_model=cfg.reward_model,
                     num_processes=accelerator.num_processes)
        return cls(cfg, accelerator, run, model, pair, optimizer, reward_fn, prompts)

    @property
    def unwrapped(self) -> ActorCritic:
        return self.accelerator.unwrap_model(self.model)

    # -- the loop ---------------------------------------------------------------------------

    def train(self) -> Path:
        """Steps are numbered from 1 (step N = N updates done), as every trainer's metrics are."""
        from tqdm.auto import tqdm

        cfg, acc = self.cfg, self.accelerator
        start = onpolicy.load_checkpoint(acc, self.run)
        logger = self.run.metrics_logger() if acc.is_main_process else None
        bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps, desc="ppo",
                   disable=not acc.is_main_process, dynamic_ncols=True)
        for step in bar:
            if cfg.lr_schedule == "linear":  # CleanRL's anneal_lr: frac = 1 - step / steps
                for group in self.optimizer.param_groups:
                    group["lr"] = (1.0 - step / cfg.max_steps) * cfg.learning_rate
            stats, samples = self.step(self.schedule.batch(step))
            if logger is not None:
                logger.log(step + 1, stats)
                bar.set_postfix(score=f"{stats['score']:.3f}", kl_k1=f"{stats['kl_k1']:.3f}",
                                beta=f"{stats['beta']:.3g}", len=f"{stats['response_length']:.1f}")
                if cfg.sample_every and step % cfg.sample_every == 0:
                    log_samples(step + 1, samples[: cfg.num_samples], logger, bar, self.run.dir / "samples.jsonl")
            if (step + 1) % cfg.save_steps == 0 or step + 1 == cfg.max_steps:
                if logger is not None:
                    logger.flush()
                onpolicy.save_checkpoint(acc, self.run, step + 1, cfg.save_total_limit)
        if logger is not None:
            logger.close()
        return self.save_policy()

    def step(self, prompts: list) -> tuple[dict[str, float], list[dict]]:
        """One PPO iteration on this process's batch of prompts. -> (metrics, samples)."""
        cfg, acc = self.cfg, self.accelerator
        timer = StepTimer(acc.device)

        # 1. rollout: y ~ pi_theta(. | x), sampled with the KV cache at temperature T
        with timer("rollout"), acc.autocast():
            rollout = self.pair.sample(prompts, 1, cfg.max_new_tokens, cfg.temperature,
                                       max_prompt_length=cfg.max_prompt_length)
        mask = rollout.response_mask.float()  # (B, R)

        # 2. score: r(x, y), the penalty for never emitting EOS, optional normalisation and clipping
        with timer("score"):
            raw_scores = onpolicy.score(self.reward_fn, cfg.reward_model, prompts, rollout.texts).to(acc.device)
            scores = self.shape_scores(raw_scores, rollout.terminated)

        # 3. log pi_old, V_old and log pi_ref of the sampled tokens (no gradients)
        with timer("ref_value"), acc.autocast():
            old_logprobs, old_values, entropy = self.policy_pass(rollout)  # (B, R) each
            ref_logprobs = self.pair.logprobs(rollout, cfg.temperature, reference=True,
                                              batch_size=self.micro_batch_size)  # (B, R)

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
            stats = onpolicy.mean_over_processes(acc, stats)
        stats.update(beta=beta, beta_next=self.kl_ctl.value, lr=self.optimizer.param_groups[0]["lr"],
                     tokens=acc.reduce(lengths.sum(), "sum").item(), **timer.totals())
        samples = [{"prompt": as_conversation(p), "response": t, "score": s}
                   for p, t, s in zip(prompts, rollout.texts, raw_scores.tolist())]
        return stats, samples

    # -- 2. score ------------------------------------------------------------------------------

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
            mb = micro_batch(rollout, idx)
            logits, values = model(mb["input_ids"], mb["attention_mask"], mb["response_start"], self.cfg.temperature)
            r = mb["response_ids"].shape[1]
            out[0][idx, :r] = token_logprobs(logits, mb["response_ids"])
            out[1][idx, :r] = values.float()  # FSDP2 casts the root's outputs to its bf16
            out[2][idx, :r] = entropy_from_logits(logits.float())
        mask = rollout.response_mask.float()
        return out[0] * mask, out[1] * mask, out[2] * mask

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
                        mb = micro_batch(rollout, idx, per_token)
                        loss, stats = self.loss(mb)
                        acc.backward(loss / len(micro_batches))
                    tokens_trained += mb["input_ids"].numel()
                    for key, value in stats.items():
                        history.setdefault(key, []).append(value.detach())
                grad_norm = onpolicy.clip_gradients(acc, self.model.parameters(), cfg.max_grad_norm,
                                                    {k: history[k][-1] for k in ("policy_loss", "value_loss")})
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

    # -- the final model -------------------------------------------------------------------------

    def save_policy(self) -> Path:
        """OUT/final as a plain transformers model (LoRA merged, or kept as an adapter), OUT/critic, plots.
        Every process calls it (save_final checks that their policies agree); the main one writes."""
        from align.train_common import save_final

        acc, cfg = self.accelerator, self.cfg
        acc.wait_for_everyone()
        model = self.unwrapped
        if acc.is_main_process and model.critic is not None:
            model.critic.save_pretrained(self.run.dir / "critic")
        out = save_final(model.policy, self.pair.tokenizer, cfg, self.run, {"beta_final": self.kl_ctl.value})
        if acc.is_main_process:
            save_plots(self.run.metrics_path, self.run.dir)
        acc.wait_for_everyone()
        return out


if __name__ == "__main__":  # `accelerate launch -m align.ppo_trainer ...` runs this module as a script
    import sys

    from prefloop.cli import run_main

    raise SystemExit(run_main(main, sys.argv[1:], "align ppo"))
