"""The mathematics of group-relative RL for language models (GRPO, Dr. GRPO, RLOO), one small function per equation.

Read against the papers:
  [GRPO]    Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
            Language Models", §4.1 (Eq. 3 objective, Eq. 4 KL estimator, §4.1.2 outcome supervision).
  [Dr.GRPO] Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective", §3.1
            (drop the std normalisation and the per-sequence length normalisation: both bias).
  [DAPO]    Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
            §3.3 (token-level policy-gradient loss).
  [RLOO]    Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
            Learning from Human Feedback in LLMs", §3.2 Eq. 6 (leave-one-out baseline), with the
            KL to the reference folded into the sequence reward as in [Ziegler] Eq. 2.
  [PPO]     Schulman et al. 2017, Eq. 7 (the clipped surrogate both use).
  [KL-approx] Schulman 2020, "Approximating KL Divergence" (k1, k3; in align/onpolicy/ppo_core.py).

Shapes: a batch is N = n_prompts * K responses, the K answers to one prompt adjacent (a
"group"); T = response tokens; `mask` (N, T) is 1 on real response tokens. Rewards and
advantages are per sequence (N,): outcome supervision, every token of an answer shares its
answer's advantage. Only torch is imported, so tests and notebooks use this without a trainer.

What the objectives imply (checked in tests/test_grpo_bandit.py on a one-token bandit):
  * RLOO with the KL in the reward is REINFORCE on r(y) - beta * log(pi/pi_ref): its fixed point
    is the KL-regularised optimum pi*(y) ∝ pi_ref(y) exp(r(y)/beta), as for PPO and DPO.
  * GRPO puts beta * k3 in the *loss*. On samples from pi, the gradient of E[k3] is the gradient
    of KL(pi_ref || pi), the reverse direction, and the group-mean baseline includes the answer
    itself, which scales the reward gradient by (K-1)/K. Dr. GRPO's fixed point on the bandit
    is therefore pi(y) = pi_ref(y) / (1 - c (r(y) - E_pi[r]) / beta), c = (K-1)/K
    (`dr_grpo_fixed_point`), not the exponential tilt.
  * With std normalisation, advantages are invariant to the reward's shift and scale, so beta
    weighs the KL against a reward of unit spread within each group, whatever the graders' units.
"""

from __future__ import annotations

import torch

from align.onpolicy.ppo_core import KL_ESTIMATORS, masked_mean

# ---------------------------------------------------------------------------
# advantages
# ---------------------------------------------------------------------------


def group_advantages(rewards: torch.Tensor, group_size: int, scale_by_std: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """[GRPO] §4.1.2: Â_i = (r_i - mean(r_group)) / (std(r_group) + eps); [Dr.GRPO] without the std.

    std is the unbiased (Bessel) sample std, as TRL computes it. rewards (N,) -> (N,).
    A group whose answers all score the same gets advantage 0: it teaches nothing.
    """
    grouped = rewards.view(-1, group_size)  # (N / K, K)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + eps)
    return advantages.reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[RLOO] Eq. 6: A_i = r_i - (1 / (K - 1)) * sum_{j != i} r_j, the leave-one-out baseline. (N,) -> (N,).

    The baseline excludes the answer itself, so it is independent of it and the estimate unbiased.
    """
    if group_size < 2:
        raise ValueError("RLOO needs at least 2 answers per prompt for a leave-one-out baseline")
    grouped = rewards.view(-1, group_size)  # (N / K, K)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baseline).reshape(-1)


def kl_penalised_sequence_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                                  mask: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[RLOO] with [Ziegler] Eq. 2: R(x, y) = r(x, y) - beta * sum_t (log pi(y_t) - log pi_ref(y_t)).

    The sequence's k1 KL (an unbiased single-sample estimate of KL(pi || pi_ref)) folded into its
    reward; computed from rollout-time log-probs, so no gradient flows through it.
    scores (N,), logprobs/ref_logprobs/mask (N, T) -> (rewards (N,), kl (N,)).
    """
    kl = (KL_ESTIMATORS["k1"](logprobs, ref_logprobs) * mask).sum(dim=1)  # (N,)
    return scores - beta * kl, kl


# ---------------------------------------------------------------------------
# the per-token surrogate and how it is averaged
# ---------------------------------------------------------------------------


def clipped_surrogate(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                      cliprange: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[PPO] Eq. 7 per token, negated: -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A).

    logprobs/old_logprobs (N, T), advantages (N,) broadcast over the tokens of each answer.
    Returns (loss per token (N, T), whether clipping bit (N, T)).
    """
    ratio = torch.exp(logprobs - old_logprobs)  # (N, T)
    advantages = advantages.unsqueeze(1)  # (N, 1)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return torch.max(unclipped, clipped), clipped > unclipped


def sequence_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[GRPO] Eq. 3: (1/G) sum_i (1/|o_i|) sum_t: each answer weighs the same, whatever its length."""
    return masked_mean(per_token, mask, dim=1).mean()


def token_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[DAPO] Eq. 12: sum over all tokens / number of tokens: each token weighs the same."""
    return masked_mean(per_token, mask)


def constant_normaliser(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[Dr.GRPO] §3.1: sum over all tokens / (N * T_max), a constant: no length bias in either direction."""
    return (per_token * mask).sum() / (per_token.shape[0] * per_token.shape[1])


def sequence_sum(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[RLOO] REINFORCE: -A * sum_t log pi(y_t): a sequence's loss sums its tokens; mean over sequences."""
    return (per_token * mask).sum(dim=1).mean()


# How a per-token loss becomes one number, by name (the trainers' `loss_type`).
AGGREGATIONS = {"sequence": sequence_mean, "token": token_mean, "dr_grpo": constant_normaliser, "sum": sequence_sum}


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, cliprange: float, beta: float,
              loss_type: str = "sequence") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """[GRPO] Eq. 3, negated: the clipped surrogate plus beta * k3 KL to the reference ([GRPO] Eq. 4), per token,
    averaged by `loss_type` (see AGGREGATIONS). beta = 0 drops the reference entirely.

    Returns the loss and diagnostics: clipfrac, k3 KL to the reference (mean per token), approx_kl to
    the rollout policy.
    """
    per_token, clipped = clipped_surrogate(logprobs, old_logprobs, advantages, cliprange)  # (N, T)
    kl = KL_ESTIMATORS["k3"](logprobs, ref_logprobs) if beta > 0 else torch.zeros_like(logprobs)  # (N, T)
    loss = AGGREGATIONS[loss_type](per_token + beta * kl, mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean(clipped.float(), mask), "kl_k3": masked_mean(kl, mask),
                 "approx_kl": masked_mean(KL_ESTIMATORS["k3"](old_logprobs, logprobs), mask)}
    return loss, stats


def rloo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              cliprange: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """[RLOO]: REINFORCE with the leave-one-out advantage (the KL is already in the reward), summed per sequence.

    At ratio 1 (the first update on fresh samples) the clipped surrogate's gradient is exactly
    REINFORCE's -A * grad sum_t log pi(y_t); the clip only matters for further epochs on one batch.
    """
    per_token, clipped = clipped_surrogate(logprobs, old_logprobs, advantages, cliprange)  # (N, T)
    loss = sequence_sum(per_token, mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean(clipped.float(), mask),
                 "approx_kl": masked_mean(KL_ESTIMATORS["k3"](old_logprobs, logprobs), mask)}
    return loss, stats


# Every loss the group-relative trainers need, by name (as align/onpolicy/ppo_core.LOSSES).
LOSSES = {"grpo": grpo_loss, "rloo": rloo_loss}
ADVANTAGES = {"grpo": group_advantages, "rloo": rloo_advantages}


# ---------------------------------------------------------------------------
# what the GRPO objective converges to (documentation, and the bandit test's target)
# ---------------------------------------------------------------------------


def dr_grpo_fixed_point(pi_ref: torch.Tensor, r: torch.Tensor, beta: float, group_size: int,
                        iters: int = 200) -> torch.Tensor:
    """The stationary policy of Dr. GRPO (no std) with beta * k3 in the loss on a one-step bandit.

    Setting the expected gradient to zero for a softmax policy (see the module head):
        c * pi(y) (r(y) - m) = beta (pi(y) - pi_ref(y)),  c = (K - 1) / K,  m = E_pi[r]
    so pi(y) = pi_ref(y) / (1 - c (r(y) - m) / beta), with m the root (found by bisection) that
    makes pi sum to 1 (then m = E_pi[r] holds by itself). pi_ref, r (V,) -> (V,).
    """
    c = (group_size - 1) / group_size
    lo = (r.max() - beta / c).item()  # every denominator must stay positive: m > max r - beta / c
    hi = r.max().item() + 1.0
    for _ in range(iters):  # sum_y pi(y) falls as m rises: bisect on sum = 1
        m = (lo + hi) / 2
        if (pi_ref / (1 - c * (r - m) / beta)).sum() > 1:
            lo = m
        else:
            hi = m
    pi = pi_ref / (1 - c * (r - (lo + hi) / 2) / beta)
    return pi / pi.sum()
