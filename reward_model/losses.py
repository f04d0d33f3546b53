"""Reward-model losses, one small function each, with the equation it implements.

Dependency-light (torch only) and importable without a trainer. Every function returns a
per-comparison loss (B,) so that the caller can weight (ensemble bootstrap) and average.

Notation: r_c, r_r rewards of the chosen / rejected response, Δ = r_c − r_r, m a margin,
σ the logistic function. A K-way ranking is a (B, K) reward matrix, best first, with a
(B, K) boolean mask marking real entries (rankings of different K share a batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """L = −log σ(r_c − r_r − m).

    Bradley & Terry (1952); as a reward-model loss, Ouyang et al. 2022 (InstructGPT) Eq. 1;
    the margin m from the judged strength is Touvron et al. 2023 (Llama 2) Eq. 2.
    """
    delta = r_chosen - r_rejected  # (B,)
    if margin is not None:
        delta = delta - margin
    return -F.logsigmoid(delta)


def bradley_terry_tie(r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
    """L = −½ log σ(Δ) − ½ log σ(−Δ): a tie counts as half a win for each side.

    The Bradley-Terry likelihood with the soft label y = ½ (the convention of Elo-style
    ratings, e.g. Chiang et al. 2024, Chatbot Arena); minimised at Δ = 0, so ties pull
    the two rewards together instead of being dropped.
    """
    delta = r_a - r_b  # (B,)
    return -0.5 * F.logsigmoid(delta) - 0.5 * F.logsigmoid(-delta)


def plackett_luce(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L = −Σ_{k=1}^{K} [ r_k − log Σ_{j=k}^{K} exp(r_j) ] for a best-first ranking.

    Plackett (1975), Luce (1959); as a reward-model objective, Zhu et al. 2023 ("Principled
    RLHF from pairwise or K-wise comparisons") Eq. 3 / Rafailov et al. 2023 (DPO) Eq. 18.
    For K = 2 it equals bradley_terry without margin. rewards, mask: (B, K).
    """
    # A finite stand-in for −inf: exp(−1e9) is 0, and the backward pass stays free of NaN.
    masked = rewards.masked_fill(~mask, -1e9)  # (B, K)
    # log Σ_{j≥k} exp(r_j): a cumulative logsumexp taken from the worst end.
    tail = torch.logcumsumexp(masked.flip(-1), dim=-1).flip(-1)  # (B, K)
    terms = torch.where(mask, rewards - tail, torch.zeros_like(rewards))  # (B, K)
    return -terms.sum(dim=-1)


def all_pairs_bradley_terry(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L = −1/C(K,2) Σ_{i<j} log σ(r_i − r_j): a K-way ranking as its C(K,2) pairs.

    Ouyang et al. 2022 (InstructGPT) Eq. 1, which averages the Bradley-Terry loss over all
    pairs of one ranking so that a ranking weighs as one comparison. rewards, mask: (B, K).
    """
    delta = rewards.unsqueeze(-1) - rewards.unsqueeze(-2)  # (B, K, K): r_i − r_j
    k = rewards.shape[-1]
    upper = torch.ones(k, k, dtype=torch.bool, device=rewards.device).triu(diagonal=1)  # i < j
    valid = upper & mask.unsqueeze(-1) & mask.unsqueeze(-2)  # (B, K, K)
    losses = torch.where(valid, -F.logsigmoid(delta), torch.zeros_like(delta))
    return losses.sum(dim=(-1, -2)) / valid.sum(dim=(-1, -2)).clamp_min(1)


def reward_centering(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """R = (Σ_k r_k)²: pushes the rewards of one comparison to sum to zero.

    Eisenstein et al. 2023 ("Helping or herding?", arXiv 2312.09244) Eq. 2, (r(x,y⁺) + r(x,y⁻))²
    for a pair; the caller multiplies by the coefficient λ. rewards, mask: (B, K).
    """
    return torch.where(mask, rewards, torch.zeros_like(rewards)).sum(dim=-1) ** 2


def pairwise(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor, tie: torch.Tensor) -> torch.Tensor:
    """Per-pair loss of an export row: bradley_terry with its margin, or bradley_terry_tie for a tie."""
    return torch.where(tie, bradley_terry_tie(r_chosen, r_rejected), bradley_terry(r_chosen, r_rejected, margin))


# How a ranking of K >= 3 responses is scored (config `ranking_loss`); pairs always use `pairwise`.
RANKING_LOSSES = {"plackett_luce": plackett_luce, "all_pairs": all_pairs_bradley_terry}

LOSSES = {
    "bradley_terry": bradley_terry,
    "bradley_terry_tie": bradley_terry_tie,
    "pairwise": pairwise,
    "reward_centering": reward_centering,
    **RANKING_LOSSES,
}


def group_loss(rewards: torch.Tensor, mask: torch.Tensor, margin: torch.Tensor, tie: torch.Tensor,
               ranking_loss: str = "plackett_luce") -> torch.Tensor:
    """Loss of each comparison group (B,): pairs (K = 2) by `pairwise`, longer rankings by RANKING_LOSSES.

    rewards, mask: (B, K_max) best first; margin, tie: (B,).
    """
    sizes = mask.sum(dim=-1)  # (B,)
    pair = pairwise(rewards[:, 0], rewards[:, 1], margin, tie)  # (B,)
    if rewards.shape[-1] == 2:
        return pair
    ranking = RANKING_LOSSES[ranking_loss](rewards, mask)  # (B,)
    return torch.where(sizes == 2, pair, ranking)
