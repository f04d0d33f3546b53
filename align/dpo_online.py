"""`align online-dpo` (or `align dpo --online`): online DPO with a reward model as the labeller (Guo et al.
2024, "Direct Language Model Alignment from Online AI Feedback"; the best-vs-worst pair of N samples as in
Xiong et al. 2024). The scaffolding (policy and reference, prompts, reward, checkpoints, precision) is
align.onpolicy's; this file holds the method.

Each step:
  1. sample N ≥ 2 responses per prompt from the current policy π_θ  (PolicyPair.sample, KV cache)
  2. score them with the reward r(x, y)                               (onpolicy.score)
  3. y_w = argmax r, y_l = argmin r; skip near-ties (r(y_w) − r(y_l) < min_reward_gap)
  4. log π_ref(y|x) of the pairs, without gradients                   (frozen copy, or adapter disabled)
  5. DPO update on the pairs with the same loss as offline DPO        (align.losses)
  6. metrics to metrics.jsonl + TensorBoard; checkpoint every save_steps steps
"""

from __future__ import annotations

from pathlib import Path

import torch

from align import onpolicy
from align.losses import log_ratio_difference, preference_loss
from align.rollout import Rollout, concat, response_logits, select


def main(argv: list[str]) -> int:
    from align.online_dpo_config import OnlineDPOConfig
    from prefloop.config import parse_config

    train_online(parse_config(OnlineDPOConfig, argv, prog="align online-dpo"))
    return 0


def train_online(cfg) -> Path:
    """Online DPO; returns the directory of the final model (OUT/final, see prefloop.run)."""
    from tqdm.auto import trange

    from align.train_common import save_final
    from prefloop.run import lineage

    # 0. run directory, prompts, reward (probed), then π_θ, π_ref, optimizer; resumed when asked
    run, acc = onpolicy.start(cfg, "align online-dpo")
    train_prompts, eval_prompts, source = onpolicy.load_prompts(cfg, cfg.eval_prompts)
    reward_fn = onpolicy.load_reward(cfg.reward_model, train_prompts[0], acc.device)
    trainer = OnlineDPO(cfg, acc, reward_fn, train_prompts + eval_prompts)
    start = onpolicy.load_checkpoint(acc, run)
    run.save(**lineage(cfg.model), prompts=source, reward_model=cfg.reward_model, num_processes=acc.num_processes)
    if run.main:
        print(f"[prefloop] online dpo: {len(train_prompts)} prompts, {len(eval_prompts)} held out, "
              f"N={cfg.num_generations}, loss {cfg.loss_type}, β={cfg.beta}, "
              f"{'LoRA' if cfg.lora else 'full fine-tuning'}, {acc.num_processes} process(es)")
    # several processes: each its own batch_size prompts of the step (the global batch is N x batch_size)
    schedule = onpolicy.PromptSchedule(train_prompts, cfg.batch_size, cfg.seed, acc.num_processes, acc.process_index)
    logger = run.metrics_logger()
    before = run.record.get("eval_before", {})
    if eval_prompts and start == 0:
        before = trainer.evaluate(eval_prompts)
        logger.log(0, {f"eval/{k}": v for k, v in before.items()})
        run.save(eval_before=before)
    after, bar = {}, trange(start, cfg.max_steps, desc="online dpo", initial=start, total=cfg.max_steps,
                            disable=not run.main)
    for step in bar:
        stats = trainer.step(step, schedule.batch(step))
        logger.log(step + 1, stats)
        bar.set_postfix(reward=f"{stats['reward/mean']:.3f}", pairs=int(stats["pairs"]))
        last = step + 1 == cfg.max_steps
        if eval_prompts and (last or (cfg.eval_steps and (step + 1) % cfg.eval_steps == 0)):
            after = trainer.evaluate(eval_prompts)  # at the last step: the final evaluation, logged once
            logger.log(step + 1, {f"eval/{k}": v for k, v in after.items()})
        if (step + 1) % cfg.save_steps == 0 and not last:
            logger.flush()
            onpolicy.save_checkpoint(acc, run, step + 1, cfg.save_total_limit)
    logger.close()
    return save_final(acc.unwrap_model(trainer.pair.policy), trainer.pair.tokenizer, cfg, run,
                      {"eval_before": before, "eval_after": after})


class OnlineDPO:
    """One step of online DPO, and its held-out evaluation."""

    def __init__(self, cfg, accelerator, reward_fn, prompts: list):
        self.cfg, self.acc, self.reward_fn = cfg, accelerator, reward_fn
        pair = onpolicy.load_policy_pair(cfg, accelerator.device, prompts)
        optimizer = torch.optim.AdamW([p for p in pair.policy.parameters() if p.requires_grad],
                                      lr=cfg.learning_rate, fused=True)  # one kernel: ~13x faster on a CPU
        warmup = max(cfg.warmup_steps, 0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)
        pair.policy, self.optimizer = accelerator.prepare(pair.policy, optimizer)
        accelerator.register_for_checkpointing(self.scheduler)
        # The module itself (sampling, the adapter switched off for π_ref, the one log-prob path); under
        # several processes onpolicy.average_gradients averages its gradients.
        pair.policy = accelerator.unwrap_model(pair.policy)
        self.pair = pair
        self.eval_pairs = None  # (chosen, rejected) held-out pairs sampled from π_ref, fixed for the run

    def sample(self, prompts: list, **kwargs) -> Rollout:
        cfg = self.cfg
        self.pair.policy.eval()
        with self.acc.autocast():
            return self.pair.sample(prompts, cfg.num_generations, cfg.max_new_tokens, cfg.temperature,
                                    max_prompt_length=cfg.max_prompt_length, **kwargs)

    def score(self, prompts: list, rollout: Rollout) -> torch.Tensor:
        repeated = [p for p in prompts for _ in range(self.cfg.num_generations)]
        return onpolicy.score(self.reward_fn, self.cfg.reward_model, repeated, rollout.texts).view(len(prompts), -1)

    def step(self, step: int, prompts: list) -> dict:
        cfg, acc = self.cfg, self.acc
        # a resumed run samples exactly what the first would have; each process its own noise
        torch.manual_seed(cfg.seed + step + onpolicy.PROCESS_SEED_STRIDE * acc.process_index)
        # 1. sample N responses per prompt from π_θ
        rollout = self.sample(prompts)
        # 2. score with r(x, y)
        rewards = self.score(prompts, rollout)  # (P, N)
        # 3. best and worst per prompt; near-ties carry no reliable preference
        pairs, gaps = best_worst_pairs(rewards, cfg.min_reward_gap)  # (K, 2) rows of the rollout
        stats = {"reward/mean": rewards.mean().item(), "reward/max": rewards.max(1).values.mean().item(),
                 "reward/min": rewards.min(1).values.mean().item(), "pairs": float(len(pairs)),
                 "skipped_ties": float(len(prompts) - len(pairs)),
                 "reward/gap": gaps.mean().item() if len(gaps) else None,
                 "response_length": rollout.response_lengths.float().mean().item(),
                 **dict.fromkeys(UPDATE_METRICS)}
        # every process updates when any has a pair (DDP steps together), on all pairs of all processes
        total = int(acc.reduce(torch.tensor(float(len(pairs)), device=acc.device), "sum").item())
        if total:
            chosen, rejected = select(rollout, pairs[:, 0]), select(rollout, pairs[:, 1])  # K may be 0 here
            # 4. log π_ref(y|x) of the pairs
            ref_chosen = ref_rejected = None
            if len(pairs):
                ref_chosen = self.sequence_logps(chosen, reference=True)  # (K,)
                ref_rejected = self.sequence_logps(rejected, reference=True)  # (K,)
            # 5. DPO update(s) on the fresh pairs
            for _ in range(cfg.updates_per_step):
                stats.update(self.update(chosen, rejected, ref_chosen, ref_rejected, total))
        return onpolicy.mean_over_processes(acc, stats, sums=("pairs", "skipped_ties"))

    def sequence_logps(self, rollout: Rollout, reference: bool = False) -> torch.Tensor:
        """Σ_t log π(y_t | x, y<t) (B,) at temperature 1 (DPO's π is the model itself); π_θ's with gradients."""
        with self.acc.autocast():
            return self.pair.logprobs(rollout, 1.0, reference=reference).sum(1)

    def update(self, chosen: Rollout, rejected: Rollout, ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor, total_pairs: int) -> dict:
        """One DPO step on this process's K pairs (K may be 0) of the `total_pairs` of all processes."""
        cfg, acc = self.cfg, self.acc
        self.pair.policy.train()
        self.optimizer.zero_grad(set_to_none=True)
        out = {}
        if len(chosen):
            logps = self.sequence_logps(concat(chosen, rejected))  # (2K,): one forward for y_w and y_l
            pol_chosen, pol_rejected = logps.chunk(2)
            h = log_ratio_difference(cfg.loss_type, pol_chosen, pol_rejected, ref_chosen, ref_rejected,
                                     chosen.response_lengths, rejected.response_lengths)  # (K,)
            losses = preference_loss(cfg.loss_type, h, cfg.beta, None, cfg.label_smoothing)  # (K,)
            # this process's share of the mean over every process's pairs (average_gradients divides by N)
            acc.backward(losses.sum() * acc.num_processes / total_pairs)
            chosen_rewards = cfg.beta * (pol_chosen.detach() - ref_chosen)  # implicit rewards (DPO Eq. 5)
            rejected_rewards = cfg.beta * (pol_rejected.detach() - ref_rejected)
            out = {"loss": losses.mean().item(), "rewards/chosen": chosen_rewards.mean().item(),
                   "rewards/rejected": rejected_rewards.mean().item(),
                   "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
                   "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item()}
        onpolicy.average_gradients(acc, self.pair.policy.parameters())
        grad_norm = onpolicy.clip_gradients(acc, self.pair.policy.parameters(), cfg.max_grad_norm, {"loss": out["loss"]})
        self.optimizer.step()
        self.scheduler.step()
        return {**out, "grad_norm": float(grad_norm), "learning_rate": self.scheduler.get_last_lr()[0]}

    # -- held-out evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, prompts: list) -> dict:
        """On held-out prompts: mean reward of fresh samples from π_θ, KL(π_θ‖π_ref) along them (exact per
        position, summed over the response), and preference accuracy: the share of fixed best/worst pairs,
        sampled once from π_ref and labelled by r, that π_θ's implicit reward β·log(π_θ/π_ref) ranks alike."""
        rollout = self.sample(prompts, seed=self.cfg.seed + 10_000)  # the same noise before and after
        out = {"reward": self.score(prompts, rollout).mean().item(), "kl": self.sequence_kl(rollout).mean().item()}
        if self.eval_pairs is None:  # best/worst of N samples from π_ref: a resumed run gets the same ones
            reference = self.sample(prompts, seed=self.cfg.seed + 20_000, reference=True)
            pairs, _ = best_worst_pairs(self.score(prompts, reference), self.cfg.min_reward_gap)
            self.eval_pairs = select(reference, pairs[:, 0]), select(reference, pairs[:, 1])
        chosen, rejected = self.eval_pairs
        if len(chosen):
            h = ((self.sequence_logps(chosen) - self.sequence_logps(chosen, True))
                 - (self.sequence_logps(rejected) - self.sequence_logps(rejected, True)))  # (K,)
            out["accuracy"] = (h > 0).float().mean().item()
        return {**out, "pairs": float(len(chosen))}

    def sequence_kl(self, rollout: Rollout) -> torch.Tensor:
        """Σ_t KL(π_θ(·|x, y<t) ‖ π_ref(·|x, y<t)) per response (B,), exact over the vocabulary."""
        P = rollout.prompt_ids.shape[1]
        kls = []
        for i in range(len(rollout)):  # one row at a time: (R, V) logits of two models stay small
            row = select(rollout, torch.tensor([i]))
            with self.acc.autocast():
                logits, _ = response_logits(self.pair.policy, row.input_ids, row.attention_mask, P)  # (1, R, V)
                with self.pair.reference() as ref:
                    ref_logits, _ = response_logits(ref, row.input_ids, row.attention_mask, P)
            logp, ref_logp = logits.float().log_softmax(-1), ref_logits.float().log_softmax(-1)
            kl_t = (logp.exp() * (logp - ref_logp)).sum(-1)  # (1, R)
            kls.append((kl_t * row.response_mask).sum())
        return torch.stack(kls)


UPDATE_METRICS = ("loss", "grad_norm", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                  "learning_rate")  # logged as null at a step without pairs


def best_worst_pairs(rewards: torch.Tensor, min_gap: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (into the prompt-major P·N samples) of the best and worst response per prompt. -> (K, 2), (K,)

    Prompts whose best and worst rewards differ by less than `min_gap` are near-ties and dropped.
    """
    P, N = rewards.shape
    best, worst = rewards.argmax(1), rewards.argmin(1)  # (P,)
    gaps = rewards.max(1).values - rewards.min(1).values  # (P,)
    keep = (gaps >= min_gap) & (gaps > 0)
    offsets = torch.arange(P) * N
    pairs = torch.stack([offsets + best, offsets + worst], dim=1)  # (P, 2)
    return pairs[keep], gaps[keep]


if __name__ == "__main__":  # `accelerate launch -m align.dpo_online ...` runs this module as a script
    import sys

    from prefloop.cli import run_main

    raise SystemExit(run_main(main, sys.argv[1:], "align online-dpo"))
