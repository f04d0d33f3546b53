"""The mathematics of RLHF-PPO, one small function per equation (imports torch only).

Read against the papers:
  [GAE]      Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation".
  [PPO]      Schulman et al. 2017, "Proximal Policy Optimization Algorithms".
  [Ziegler]  Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences".
  [InstructGPT] Ouyang et al. 2022, "Training language models to follow instructions with human feedback".
  [KL-approx] Schulman 2020, "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html).
  [N-details] Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO".
  [Secrets]  Zheng et al. 2023, "Secrets of RLHF in Large Language Models Part I: PPO".

Shapes: B = sequences, T = response tokens. A `mask` (B, T) is 1 on real response
tokens (up to and including EOS) and 0 on padding; responses are left-aligned, so a
row's mask is ones followed by zeros. Everything here is importable without a trainer,
so another trainer or a notebook can reuse it.
"""

from __future__ import annotations

import math

import torch

# ---------------------------------------------------------------------------
# masked statistics
# ---------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)  # Bessel's correction, as numpy's var(ddof=1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries [N-details: "advantage whitening"].

    shift_mean=False keeps the mean (used for rewards: a shift would change what the
    policy is rewarded for stopping early).
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


# ---------------------------------------------------------------------------
# rewards: the KL-penalised reward of [Ziegler] eq. (2) / [InstructGPT] eq. (2)
# ---------------------------------------------------------------------------

# Per-token estimators of KL(pi || pi_ref) from samples y ~ pi, with
# log r = log pi_ref(y) - log pi(y)   [KL-approx]:
#   k1 = -log r                unbiased, high variance, can be negative per token
#   k2 = (log r)^2 / 2         biased, low variance, >= 0
#   k3 = (r - 1) - log r       unbiased, low variance, >= 0
KL_ESTIMATORS = {
    "k1": lambda logprobs, ref_logprobs: logprobs - ref_logprobs,
    "k2": lambda logprobs, ref_logprobs: 0.5 * (ref_logprobs - logprobs) ** 2,
    "k3": lambda logprobs, ref_logprobs: torch.expm1(ref_logprobs - logprobs) - (ref_logprobs - logprobs),
}


def kl_penalised_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         mask: torch.Tensor, beta: float, estimator: str = "k1") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token reward R_t = -beta * KL_t, plus the scalar score r(x, y) at the last token.

    Summed over t this is [Ziegler] eq. (2): R(x, y) = r(x, y) - beta * log(pi(y|x) / pi_ref(y|x)).
    scores (B,), logprobs/ref_logprobs/mask (B, T). Returns (rewards (B, T), kl (B, T)).
    """
    kl = KL_ESTIMATORS[estimator](logprobs, ref_logprobs) * mask  # (B, T)
    rewards = -beta * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)  # (B,) index of the EOS (or final) token
    rewards[torch.arange(len(scores), device=scores.device), last] += scores
    return rewards * mask, kl


def shape_scores(scores: torch.Tensor, terminated: torch.Tensor, missing_eos_penalty: float | None = None,
                 moments: "RunningMoments | None" = None, clip: float | None = None) -> torch.Tensor:
    """The scalar reward r(x, y) as PPO uses it, in this order:

    1. responses that never emitted EOS lose `missing_eos_penalty` [N-details],
    2. r -> (r - mean) / std with running `moments` (already updated by the caller) [Ziegler §2.2],
    3. r is clipped to [-clip, clip].
    scores (B,), terminated (B,) bool -> (B,).
    """
    if missing_eos_penalty is not None:
        scores = scores - missing_eos_penalty * (~terminated).to(scores.dtype)
    if moments is not None:
        scores = (scores - moments.mean) / moments.std
    if clip is not None:
        scores = scores.clamp(-clip, clip)
    return scores


# ---------------------------------------------------------------------------
# advantages [GAE]
# ---------------------------------------------------------------------------


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation, [GAE] eqs. (11)-(16), as CleanRL writes it.

        delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
        A_t     = delta_t + gamma * lam * A_{t+1}
        returns = A + V   (the value target, "lambda-return")

    Past a response's last token the episode has ended: V = 0 and r = 0 there, so the
    recursion starts from zero at each row's end. rewards/values/mask (B, T).
    """
    values, rewards = values * mask, rewards * mask
    T = rewards.shape[1]
    lastgaelam = torch.zeros_like(rewards[:, 0])  # (B,)
    advantages_reversed = []
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t < T - 1 else torch.zeros_like(lastgaelam)
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=1) * mask  # (B, T)
    returns = advantages + values
    return advantages, returns


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, cliprange: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, [PPO] eq. (7), negated for gradient descent:

        L = -E_t[ min(ratio_t * A_t, clip(ratio_t, 1 - eps, 1 + eps) * A_t) ],  ratio_t = pi / pi_old

    Returns the loss and diagnostics: `clipfrac` (share of tokens where clipping bit) and
    `approx_kl` = E[(ratio - 1) - log ratio], the k3 estimate of KL(pi_old || pi) as CleanRL logs it.
    """
    logratio = logprobs - old_logprobs
    ratio = torch.exp(logratio)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((pg_losses2 > pg_losses).float(), mask)
        approx_kl = masked_mean((ratio - 1) - logratio, mask)
    return loss, {"clipfrac": clipfrac, "approx_kl": approx_kl}


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, cliprange_value: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss [N-details; Secrets §5]: the critic may not move further than
    cliprange_value from its rollout-time estimate, mirroring the policy's clipping.

        L_V = 1/2 * E_t[ max((V - R)^2, (clip(V, V_old - eps_v, V_old + eps_v) - R)^2) ]
    """
    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf_losses1 = (values - returns) ** 2
    vf_losses2 = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    with torch.no_grad():
        vf_clipfrac = masked_mean((vf_losses2 > vf_losses1).float(), mask)
    return loss, {"vf_clipfrac": vf_clipfrac}


# Every loss PPO needs, by name: the trainer looks them up here (no if-chains).
LOSSES = {"policy": clipped_policy_loss, "value": clipped_value_loss}


# ---------------------------------------------------------------------------
# diagnostics
# ---------------------------------------------------------------------------


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H(pi) = logsumexp(z) - sum_v softmax(z)_v z_v, per position. (..., V) -> (...)."""
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(-1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var[R - V] / Var[R]: 1 is a perfect critic, 0 no better than a constant, < 0 worse."""
    var_returns = masked_var(returns, mask)
    return 1.0 - masked_var(returns - values, mask) / var_returns.clamp(min=1e-8)


# ---------------------------------------------------------------------------
# the KL coefficient beta
# ---------------------------------------------------------------------------


class FixedKLController:
    """beta stays where it was set."""

    def __init__(self, beta: float):
        self.value = beta

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


class AdaptiveKLController(FixedKLController):
    """[Ziegler] §2.2: a proportional controller steering KL(pi || pi_ref) towards a target.

        e_t       = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta_t+1  = beta_t * (1 + K_beta * e_t),  K_beta = n_steps / horizon

    as in the paper's code (lm-human-preferences), where n_steps is the number of
    episodes in the batch just seen, so `horizon` is counted in episodes.
    """

    def __init__(self, beta: float, target: float, horizon: int):
        super().__init__(beta)
        self.target, self.horizon = target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value


# ---------------------------------------------------------------------------
# score normalisation
# ---------------------------------------------------------------------------


class RunningMoments:
    """Running mean/std of the reward model's scores (Chan et al.'s parallel update).

    [Ziegler] normalise the reward model so its scores have mean 0 and std 1; keeping
    running moments of the scores seen does the same online [N-details].
    """

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 1e-24

    def update(self, xs: torch.Tensor) -> None:
        xs = xs.detach().double()
        n = xs.numel()
        batch_mean, batch_var = xs.mean().item(), xs.var(unbiased=False).item() if n > 1 else 0.0
        delta, total = batch_mean - self.mean, self.count + n
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var, self.count = m2 / total, total

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 1e-12))

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]
