"""Preference losses for DPO and its variants: one small function per loss, each with its equation.

Every loss is written on the implicit-reward log-ratio difference

    h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)]        (B,)

so that the policy's implicit reward is r̂(x, y) = β·log(π_θ(y|x) / π_ref(y|x)) (DPO, Rafailov et al. 2023,
Eq. 5) and β·h is the implicit reward margin of the chosen response y_w over the rejected y_l.
Each function returns the per-pair loss (B,); callers take the mean.

Used by the offline trainer (a TRL DPOTrainer subclass), the online loop and the closed-form bandit test,
so all three optimise exactly the same objective. Only torch is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def sigmoid_loss(h: Tensor, beta: float, margin: Tensor, eps: float) -> Tensor:
    """DPO (Rafailov et al. 2023, Eq. 7): −log σ(β·h − Δ).

    Δ is the per-pair offset of ODPO (Amini et al. 2024, the loss with offset Δ_r): a strongly preferred pair must be
    won by a larger implicit-reward margin. Δ = 0 is plain DPO.
    """
    return -F.logsigmoid(beta * h - margin)


def ipo_loss(h: Tensor, beta: float, margin: Tensor, eps: float) -> Tensor:
    """IPO (Azar et al. 2023, Eq. 17): (h − 1/(2τ))², with τ = β.

    The squared loss regresses h onto a fixed target instead of pushing it to infinity, so IPO does
    not overfit deterministic preferences. h is built from per-token average log-ratios (see
    `PreferenceLoss.per_token`), as in TRL and as confirmed by the IPO authors.
    """
    return (h - 1.0 / (2.0 * beta)) ** 2


def hinge_loss(h: Tensor, beta: float, margin: Tensor, eps: float) -> Tensor:
    """SLiC-HF hinge (Zhao et al. 2023, calibration loss L_cal with δ = 1): max(0, 1 + Δ − β·h)."""
    return torch.relu(1.0 + margin - beta * h)


def robust_loss(h: Tensor, beta: float, margin: Tensor, eps: float) -> Tensor:
    """Robust DPO, rDPO (Chowdhury et al. 2024, the de-biased loss ℓ̂_ε), for labels flipped with probability ε:

        [(1 − ε)·ℓ(β·h − Δ) − ε·ℓ(−(β·h − Δ))] / (1 − 2ε),   ℓ(z) = −log σ(z)

    An unbiased estimate of the clean DPO loss, so its minimiser is the clean optimum.
    """
    z = beta * h - margin
    return ((1.0 - eps) * -F.logsigmoid(z) - eps * -F.logsigmoid(-z)) / (1.0 - 2.0 * eps)


def conservative_loss(h: Tensor, beta: float, margin: Tensor, eps: float) -> Tensor:
    """Conservative DPO, cDPO (Mitchell 2023, "A note on DPO with noisy preferences"):

        −(1 − ε)·log σ(β·h − Δ) − ε·log σ(−(β·h − Δ))

    Binary cross-entropy with label smoothing ε: the optimum stops at β·h = log((1 − ε)/ε).
    """
    z = beta * h - margin
    return -(1.0 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


@dataclass(frozen=True)
class PreferenceLoss:
    fn: Callable[[Tensor, float, Tensor, float], Tensor]
    supports_margin: bool  # whether a per-pair offset Δ (from judged strength) enters the loss
    per_token: bool  # whether h uses per-token average log-ratios instead of sequence sums
    uses_label_smoothing: bool


LOSSES: dict[str, PreferenceLoss] = {
    "sigmoid": PreferenceLoss(sigmoid_loss, supports_margin=True, per_token=False, uses_label_smoothing=False),
    "ipo": PreferenceLoss(ipo_loss, supports_margin=False, per_token=True, uses_label_smoothing=False),
    "hinge": PreferenceLoss(hinge_loss, supports_margin=True, per_token=False, uses_label_smoothing=False),
    "robust": PreferenceLoss(robust_loss, supports_margin=True, per_token=False, uses_label_smoothing=True),
    "conservative": PreferenceLoss(conservative_loss, supports_margin=True, per_token=False,
                                   uses_label_smoothing=True),
}


def check_objective(loss_type: str, label_smoothing: float) -> None:
    """The preference objective's fields, offline and online DPO alike (their ranges: prefloop.config.check_ranges)."""
    if label_smoothing and not LOSSES[loss_type].uses_label_smoothing:
        raise ValueError(f"label_smoothing is only used by the robust and conservative losses, not {loss_type!r}")


def log_ratio_difference(loss_type: str, policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor,
                         ref_rejected: Tensor, chosen_lengths: Tensor | None = None,
                         rejected_lengths: Tensor | None = None) -> Tensor:
    """h (B,) from summed sequence log-probabilities (B,); per-token averages for IPO-style losses."""
    chosen_logratios = policy_chosen - ref_chosen  # (B,)
    rejected_logratios = policy_rejected - ref_rejected  # (B,)
    if LOSSES[loss_type].per_token:
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError(f"loss {loss_type!r} averages per token: pass chosen_lengths and rejected_lengths")
        chosen_logratios = chosen_logratios / chosen_lengths.clamp(min=1)
        rejected_logratios = rejected_logratios / rejected_lengths.clamp(min=1)
    return chosen_logratios - rejected_logratios


def preference_loss(loss_type: str, h: Tensor, beta: float, margin: Tensor | None = None,
                    label_smoothing: float = 0.0) -> Tensor:
    """Per-pair loss (B,) of `loss_type` on log-ratio differences h (B,); margins Δ (B,) where supported."""
    spec = LOSSES[loss_type]
    if margin is None or not spec.supports_margin:
        margin = torch.zeros_like(h)
    return spec.fn(h, beta, margin.to(h), label_smoothing)
