"""`align online-dpo`: online DPO with a reward model as the labeller (Guo et al.
2024, "Direct Language Model Alignment from Online AI Feedback"; the best-vs-worst pair of N samples as in
Xiong et al. 2024), on the on-policy loop (align/onpolicy/loop.py); this file holds the method.

Each step (1, 2 and 6 are the loop's):
  1. sample N ≥ 2 responses per prompt from the current policy π_θ  (PolicyPair.sample, KV cache)
  2. score them with the reward r(x, y)                               (onpolicy.score)
  3. y_w = argmax r, y_l = argmin r; skip near-ties (r(y_w) − r(y_l) < min_reward_gap)
  4. log π_ref(y|x) of the pairs, without gradients                   (frozen copy, or adapter disabled)
  5. DPO update on the pairs with the same loss as offline DPO        (align.losses)
  6. metrics to metrics.jsonl + TensorBoard; checkpoint every save_steps steps and at the last
"""

from __future__ import annotations

from pathlib import Path

import torch

from align.losses import log_ratio_difference, preference_loss
from align.onpolicy.loop import Algorithm, OnPolicyTrainer, Scored, sample
from align.onpolicy.ppo_core import masked_mean
from align.onpolicy.rollout import Rollout, concat, response_logits, select


def main(argv: list[str]) -> int:
    from align.onpolicy.online_dpo_config import OnlineDPOConfig
    from prefloop.config import parse_config

    train_online(parse_config(OnlineDPOConfig, argv, prog="align online-dpo"))
    return 0


def train_online(cfg) -> Path:
    """Online DPO; returns the directory of the final model (OUT/final, see prefloop.run)."""
    return OnPolicyTrainer(cfg, OnlineDPO(cfg)).train()


class OnlineDPO(Algorithm):
    """Steps 3-5 of online DPO, and its held-out evaluation."""

    command = "align online-dpo"
    summed_metrics = ("pairs", "skipped_ties")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.num_generations = cfg.num_generations
        self.eval_pairs = None  # (chosen, rejected) held-out pairs sampled from π_ref, fixed for the run

    def describe(self) -> str:
        cfg = self.cfg
        return f"N={cfg.num_generations}, loss {cfg.loss_type}, β={cfg.beta}, "

    # -- 3-4: pairs and their reference log-probs ----------------------------------------------------------

    def advantages(self, scored: Scored) -> dict:
        rewards = scored.scores.view(len(scored.tasks), -1)  # (P, N)
        # 3. best and worst per prompt; near-ties carry no reliable preference
        pairs, gaps = best_worst_pairs(rewards.cpu(), self.cfg.min_reward_gap)  # (K, 2) rows of the rollout
        rollout = scored.rollout
        chosen, rejected = select(rollout, pairs[:, 0]), select(rollout, pairs[:, 1])  # K may be 0 here
        # 4. log π_ref(y|x) of the pairs
        ref_chosen = ref_rejected = None
        if len(pairs):
            ref_chosen = self.sequence_logps(chosen, reference=True)  # (K,)
            ref_rejected = self.sequence_logps(rejected, reference=True)  # (K,)
        stats = {"reward_max": rewards.max(1).values.mean(), "reward_min": rewards.min(1).values.mean(),
                 "pairs": float(len(pairs)), "skipped_ties": float(len(rewards) - len(pairs)),
                 "reward_gap": gaps.mean() if len(gaps) else None}
        return {"rollout": rollout, "chosen": chosen, "rejected": rejected, "ref_chosen": ref_chosen,
                "ref_rejected": ref_rejected, "stats": stats}

    def sequence_logps(self, rollout: Rollout, reference: bool = False, entropy: bool = False):
        """Σ_t log π(y_t | x, y<t) (B,) at temperature 1 (DPO's π is the model itself); π_θ's with gradients.
        With `entropy`: and the mean entropy per token of π_θ over these responses."""
        with self.engine.acc.autocast():
            out = self.pair.logprobs(rollout, 1.0, reference=reference, entropy=entropy)
        if entropy:
            return out[0].sum(1), masked_mean(out[1], rollout.response_mask.float())
        return out.sum(1)

    # -- 5: the DPO update ----------------------------------------------------------------------------------

    def update(self, batch: dict) -> dict:
        """num_iterations DPO steps on the pairs of every process; every process steps when any has a pair
        (the engine reduces together), none when none has."""
        engine = self.engine
        total = int(engine.sum(torch.tensor(batch["stats"]["pairs"], device=engine.acc.device)).item())
        out = dict.fromkeys(DPO_METRICS)  # logged as null at a step without pairs
        for _ in range(self.cfg.num_iterations if total else 0):
            out = self.dpo_step(batch, total)
        return {**batch["stats"], **out}

    def dpo_step(self, batch: dict, total_pairs: int) -> dict:
        """One DPO step on this process's K pairs (K may be 0) of the `total_pairs` of all processes."""
        cfg, engine = self.cfg, self.engine
        chosen, rejected, ref_chosen, ref_rejected = (batch[k] for k in ("chosen", "rejected", "ref_chosen",
                                                                         "ref_rejected"))
        if not len(chosen):  # nothing to learn here, but the engine reduces every process's gradients together
            logps, _ = self.sequence_logps(select(batch["rollout"], torch.tensor([0])), entropy=True)
            engine.backward(logps.sum() * 0.0)
            return {"grad_norm": engine.step({"loss": 0.0})}
        logps, entropy = self.sequence_logps(concat(chosen, rejected), entropy=True)  # (2K,): one forward
        pol_chosen, pol_rejected = logps.chunk(2)
        h = log_ratio_difference(cfg.loss_type, pol_chosen, pol_rejected, ref_chosen, ref_rejected,
                                 chosen.response_lengths, rejected.response_lengths)  # (K,)
        losses = preference_loss(cfg.loss_type, h, cfg.beta, None, cfg.label_smoothing)  # (K,)
        # this process's share of the mean over every process's pairs (the engine averages over N)
        engine.backward(losses.sum() * engine.num_processes / total_pairs)
        grad_norm = engine.step({"loss": losses.mean().item()})
        chosen_rewards = cfg.beta * (pol_chosen.detach() - ref_chosen)  # implicit rewards (DPO Eq. 5)
        rejected_rewards = cfg.beta * (pol_rejected.detach() - ref_rejected)
        kl = torch.cat([pol_chosen.detach() - ref_chosen, pol_rejected.detach() - ref_rejected])  # (2K,) k1
        return {"loss": losses.mean().item(), "grad_norm": grad_norm, "entropy": entropy.item(),
                "kl": kl.mean().item(), "rewards/chosen": chosen_rewards.mean().item(),
                "rewards/rejected": rejected_rewards.mean().item(),
                "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
                "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item()}

    # -- held-out evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, prompts: list) -> dict:
        """On held-out prompts: mean reward of fresh samples from π_θ, KL(π_θ‖π_ref) along them (exact per
        position, summed over the response), and preference accuracy: the share of fixed best/worst pairs,
        sampled once from π_ref and labelled by r, that π_θ's implicit reward β·log(π_θ/π_ref) ranks alike."""
        G = self.num_generations
        rollout = sample(self, prompts, G, seed=self.cfg.seed + 10_000)  # the same noise before and after
        out = {"reward": self.score(-1, prompts, rollout).scores.mean().item(),
               "kl": self.sequence_kl(rollout).mean().item()}
        if self.eval_pairs is None:  # best/worst of N samples from π_ref: a resumed run gets the same ones
            reference = sample(self, prompts, G, seed=self.cfg.seed + 20_000, reference=True)
            rewards = self.score(-1, prompts, reference).scores.view(len(prompts), -1).cpu()
            pairs, _ = best_worst_pairs(rewards, self.cfg.min_reward_gap)
            self.eval_pairs = select(reference, pairs[:, 0]), select(reference, pairs[:, 1])
        chosen, rejected = self.eval_pairs
        if len(chosen):
            h = ((self.sequence_logps(chosen) - self.sequence_logps(chosen, True))
                 - (self.sequence_logps(rejected) - self.sequence_logps(rejected, True)))  # (K,)
            out["accuracy"] = (h > 0).float().mean().item()
        return {**out, "pairs": float(len(chosen))}

    def sequence_kl(self, rollout: Rollout) -> torch.Tensor:
        """Σ_t KL(π_θ(·|x, y<t) ‖ π_ref(·|x, y<t)) per response (B,), exact over the vocabulary."""
        from align.onpolicy.toolkit import root_gathered

        P = rollout.prompt_ids.shape[1]
        kls = []
        for i in range(len(rollout)):  # one row at a time: (R, V) logits of two models stay small
            row = select(rollout, torch.tensor([i]))
            with self.engine.acc.autocast():
                logits, _ = self.engine.model(row.input_ids, row.attention_mask, P, 1.0)  # (1, R, V)
                with root_gathered(self.pair.root), self.pair.reference() as ref:
                    ref_logits, _ = response_logits(ref, row.input_ids, row.attention_mask, P)
            logp, ref_logp = logits.float().log_softmax(-1), ref_logits.float().log_softmax(-1)
            kl_t = (logp.exp() * (logp - ref_logp)).sum(-1)  # (1, R)
            kls.append((kl_t * row.response_mask).sum())
        return torch.stack(kls)


DPO_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")  # TRL's names


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


if __name__ == "__main__":  # `accelerate launch -m align.onpolicy.online_dpo_trainer ...` runs this module as a script
    import sys

    from prefloop.cli import run_main

    raise SystemExit(run_main(main, sys.argv[1:], "align online-dpo"))
