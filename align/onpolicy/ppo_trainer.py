"""`align ppo`: PPO with a KL penalty against a reward model, read top to bottom against the papers.

One iteration, after Ziegler et al. 2019 and Ouyang et al. 2022; steps 1-2 and the logging are the
on-policy loop's (align/onpolicy/loop.py), the rest is `PPO` below:

  1. rollout     y ~ pi_theta(. | x) for a batch of prompts x (KV cache, temperature T, stop at EOS)
  2. score       r(x, y) from the reward model; non-terminated responses penalised; optional
                 running normalisation and clipping                          (PPO.shape_scores)
  3. old passes  log pi_old(y_t), V_old(s_t) and log pi_ref(y_t), all without gradients
  4. rewards     R_t = -beta * KL_t, plus r(x, y) at the last token          [Ziegler eq. 2]
  5. advantages  GAE(gamma, lambda), whitened over the global batch          [GAE eq. 16]
  6. update      K epochs over minibatches: clipped surrogate + c_1 * clipped value loss
                 (- c_2 * entropy), gradient accumulation, gradient clipping [PPO eq. 7, 9]
  7. beta        the Ziegler controller moves beta towards the target KL (if adaptive)
  8. log         reward, kl (k1; k2/k3 too), entropy, clip_ratio, approx_kl, value loss, explained
                 variance, completion length, beta, phase timings

The equations live in `align.onpolicy.ppo_core`; the critic (`ActorCritic`: policy and V in one module, so the
engine reduces both gradients) in `align.onpolicy.critic`.

Launch:  align ppo --config configs/ppo.yaml          (or --config ppo_quick: minutes on a CPU)
         accelerate launch --config_file configs/accelerate_ddp.yaml -m align.onpolicy.ppo_trainer --config configs/ppo.yaml
"""

from __future__ import annotations

from pathlib import Path

import torch

from align.onpolicy.critic import ActorCritic, load_critic
from align.onpolicy.engine import global_share
from align.onpolicy.loop import Algorithm, OnPolicyTrainer, Scored
from align.onpolicy.ppo_config import PPOConfig
from align.onpolicy.ppo_core import (
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
from align.onpolicy.rollout import micro_batch, token_logprobs


def main(argv: list[str] | None = None) -> int:
    from prefloop.config import parse_config
    from prefloop.models import check_model

    cfg = parse_config(PPOConfig, argv, prog="align ppo")
    check_model(cfg.model)  # before the reward model loads: a typo costs no time
    train_ppo(cfg)
    return 0


def train_ppo(cfg: PPOConfig) -> Path:
    """PPO on the on-policy loop; returns the directory of the final model (OUT/final)."""
    return OnPolicyTrainer(cfg, PPO(cfg)).train()


class PPO(Algorithm):
    """Steps 2-7 of a PPO iteration (the module head); the loop does the rest."""

    command = "align ppo"
    summed_metrics = ("tokens",)

    def __init__(self, cfg: PPOConfig):
        super().__init__(cfg)
        self.plots = PPO_PLOTS
        self.kl_ctl = (AdaptiveKLController(cfg.beta, cfg.target_kl, cfg.kl_horizon) if cfg.adaptive_kl
                       else FixedKLController(cfg.beta))
        self.score_moments = RunningMoments()
        self.micro_batch_size = cfg.mini_batch_size // cfg.gradient_accumulation_steps

    def module(self, pair, device) -> ActorCritic:
        return ActorCritic(pair.policy, load_critic(self.cfg, pair.tokenizer, device))

    def checkpoint_state(self) -> list:
        return [self.kl_ctl, self.score_moments]

    def describe(self) -> str:
        return f"beta={self.cfg.beta}{' (adaptive)' if self.cfg.adaptive_kl else ''}, critic {self.cfg.critic}, "

    # -- 2-5: from a scored rollout to advantages ----------------------------------------------------

    def advantages(self, scored: Scored) -> dict:
        cfg, rollout = self.cfg, scored.rollout
        mask = rollout.response_mask.float()  # (B, R)

        # 2. score: the penalty for never emitting EOS, optional normalisation and clipping
        scores = self.shape_scores(scored.scores, rollout.terminated)

        # 3. log pi_old, V_old and log pi_ref of the sampled tokens (no gradients)
        with self.engine.acc.autocast():
            old_logprobs, old_values, entropy = self.policy_pass(rollout)  # (B, R) each
            ref_logprobs = self.pair.logprobs(rollout, cfg.temperature, reference=True,
                                              batch_size=self.micro_batch_size)  # (B, R)

        # 4. rewards: R_t = -beta * KL_t, plus r(x, y) at the last token [Ziegler eq. 2]
        beta = self.kl_ctl.value
        rewards, kl = kl_penalised_rewards(scores, old_logprobs, ref_logprobs, mask, beta, cfg.kl_estimator)

        # 5. advantages: GAE(gamma, lambda) [GAE eq. 16], whitened over the global batch [N-details]
        advantages, returns = compute_gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = self.whiten(advantages, mask)
        with torch.no_grad():
            stats = {
                "kl": (KL_ESTIMATORS["k1"](old_logprobs, ref_logprobs) * mask).sum(1).mean(),
                **{f"kl_{k}": (fn(old_logprobs, ref_logprobs) * mask).sum(1).mean()
                   for k, fn in KL_ESTIMATORS.items() if k != "k1"},
                "score_shaped": scores.mean(), "non_score_reward": -beta * kl.sum(1).mean(),
                "rlhf_reward": (scores - beta * kl.sum(1)).mean(), "entropy": masked_mean(entropy, mask),
                "advantages_mean": masked_mean(advantages, mask), "returns_mean": masked_mean(returns, mask),
                "values_mean": masked_mean(old_values, mask),
                "explained_variance": explained_variance(old_values, returns, mask), "beta": beta}
        return {"rollout": rollout, "old_logprobs": old_logprobs, "old_values": old_values, "kl": kl,
                "advantages": advantages, "returns": returns, "step": scored.step, "stats": stats}

    def shape_scores(self, scores: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
        cfg, moments = self.cfg, None
        if cfg.score_norm:  # moments over every process's scores (after the EOS penalty), so all ranks agree
            penalised = shape_scores(scores, terminated, cfg.missing_eos_penalty)
            self.score_moments.update(self.engine.gather(penalised))
            moments = self.score_moments
        return shape_scores(scores, terminated, cfg.missing_eos_penalty, moments, cfg.score_clip)

    @torch.no_grad()
    def policy_pass(self, rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi_old (B, R), V_old (B, R) and the policy's entropy (B, R) on the rollout."""
        B, R = len(rollout), rollout.response_ids.shape[1]
        out = [torch.zeros(B, R, device=self.engine.acc.device) for _ in range(3)]
        for idx in torch.arange(B).split(self.micro_batch_size):
            mb = micro_batch(rollout, idx)
            logits, values = self.engine.model(mb["input_ids"], mb["attention_mask"], mb["response_start"],
                                               self.cfg.temperature)
            r = mb["response_ids"].shape[1]
            out[0][idx, :r] = token_logprobs(logits, mb["response_ids"])
            out[1][idx, :r] = values.float()  # FSDP2 casts the root's outputs to its bf16
            out[2][idx, :r] = entropy_from_logits(logits.float())
        mask = rollout.response_mask.float()
        return out[0] * mask, out[1] * mask, out[2] * mask

    def whiten(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """masked_whiten over the global batch: one process is ppo_core's own; several share their sums."""
        if self.engine.num_processes == 1:
            return masked_whiten(x, mask)
        n = self.engine.sum(mask.sum())
        mean = self.engine.sum((x * mask).sum()) / n
        var = self.engine.sum((((x - mean) ** 2) * mask).sum()) / n * n / (n - 1)  # Bessel, as masked_var
        return (x - mean) * torch.rsqrt(var + 1e-8) * mask

    # -- 6-7: the update ---------------------------------------------------------------------------------

    def update(self, batch: dict) -> dict:
        cfg, engine, rollout = self.cfg, self.engine, batch["rollout"]
        # 6. K epochs of clipped-surrogate updates over minibatches [PPO Alg. 1]
        per_token = {k: batch[k] for k in ("old_logprobs", "old_values", "advantages", "returns")}
        history: dict[str, list[torch.Tensor]] = {}
        tokens_trained = 0  # (prompt + response) positions through forward and backward
        for minibatch in engine.minibatches(len(rollout), cfg.mini_batch_size, cfg.num_iterations, batch["step"]):
            micro_batches = minibatch.split(self.micro_batch_size)
            # token-mean losses: each micro-batch's mean weighed by its share of the global minibatch's tokens
            total = engine.sum(rollout.response_mask[minibatch].sum().float())
            for i, idx in enumerate(micro_batches):
                with engine.accumulating(last=i == len(micro_batches) - 1):
                    mb = micro_batch(rollout, idx, per_token)
                    loss, stats = self.loss(mb)
                    engine.backward(loss * global_share(engine, mb["response_mask"].sum().float(), total))
                tokens_trained += mb["input_ids"].numel()
                for key, value in stats.items():
                    history.setdefault(key, []).append(value.detach())
            grad_norm = engine.step({k: history[k][-1] for k in ("policy_loss", "value_loss")})
            history.setdefault("grad_norm", []).append(torch.tensor(grad_norm))

        # 7. beta: the Ziegler controller sees the batch's KL, averaged over processes
        kl_per_response = (engine.sum(batch["kl"].sum(1).mean()) / engine.num_processes).item()
        self.kl_ctl.update(kl_per_response, cfg.batch_size * engine.num_processes)
        return {**batch["stats"], **{key: torch.stack(values).mean() for key, values in history.items()},
                "beta_next": self.kl_ctl.value, "tokens_trained": tokens_trained,
                "tokens": batch["rollout"].response_lengths.sum()}

    def loss(self, mb: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L = L_clip + c_1 * L_V - c_2 * H   [PPO eq. 9], on one micro-batch."""
        cfg = self.cfg
        logits, values = self.engine.model(mb["input_ids"], mb["attention_mask"], mb["response_start"],
                                           cfg.temperature)
        logprobs = token_logprobs(logits, mb["response_ids"])  # (b, r)
        mask = mb["response_mask"].float()
        pg_loss, pg_stats = LOSSES["policy"](logprobs, mb["old_logprobs"], mb["advantages"], mask, cfg.cliprange)
        vf_loss, vf_stats = LOSSES["value"](values, mb["old_values"], mb["returns"], mask, cfg.cliprange_value)
        loss = pg_loss + cfg.vf_coef * vf_loss
        if cfg.ent_coef:  # the entropy of a (b, r, V) tensor is only worth its graph when it is used
            loss = loss - cfg.ent_coef * masked_mean(entropy_from_logits(logits.float()), mask)
        with torch.no_grad():
            ratio = masked_mean(torch.exp(logprobs - mb["old_logprobs"]), mask)
        return loss, {"loss": loss.detach(), "policy_loss": pg_loss.detach(), "value_loss": vf_loss.detach(),
                      "ratio": ratio, "clip_ratio": pg_stats["clipfrac"], "approx_kl": pg_stats["approx_kl"],
                      **vf_stats}

    # -- the run's other outputs -------------------------------------------------------------------------

    def results(self) -> dict:
        return {"beta_final": self.kl_ctl.value}

    def save(self, run) -> None:
        critic = self.engine.unwrapped.critic
        if critic is not None:
            critic.save_pretrained(run.dir / "critic")


PPO_PLOTS = (("reward.png", ("reward", "rlhf_reward"), "reward", None),
             ("kl.png", ("kl", "kl_k3"), "KL(pi || pi_ref), nats per response", "beta"))


if __name__ == "__main__":  # `accelerate launch -m align.onpolicy.ppo_trainer ...` runs this module as a script
    import sys

    from prefloop.cli import run_main

    raise SystemExit(run_main(main, sys.argv[1:], "align ppo"))
