"""align/losses.py against hand-computed values, and DPO's optimum against its closed form on a bandit."""

from __future__ import annotations

import math

import pytest
import torch

from align.losses import LOSSES, log_ratio_difference, preference_loss

pytestmark = pytest.mark.usefixtures("tiny_cpu")  # fp32, one thread (conftest)

# Two pairs of fixed sequence log-probabilities (sums over the response tokens).
POLICY_CHOSEN, POLICY_REJECTED = torch.tensor([-5.0, -7.0]), torch.tensor([-6.0, -4.0])
REF_CHOSEN, REF_REJECTED = torch.tensor([-5.5, -6.0]), torch.tensor([-5.0, -5.0])
CHOSEN_LEN, REJECTED_LEN = torch.tensor([2, 4]), torch.tensor([3, 1])
BETA = 0.1
# h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)):
#   pair 1: (−5 + 5.5) − (−6 + 5) = 0.5 + 1 = 1.5      pair 2: (−7 + 6) − (−4 + 5) = −1 − 1 = −2
H = torch.tensor([1.5, -2.0])


def _h(loss_type: str) -> torch.Tensor:
    return log_ratio_difference(loss_type, POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED,
                                CHOSEN_LEN, REJECTED_LEN)


def test_dpo_sigmoid_equals_hand_computed():
    assert torch.allclose(_h("sigmoid"), H)
    loss = preference_loss("sigmoid", _h("sigmoid"), BETA)
    # −log σ(β·h): −log σ(0.15) = log(1 + e^−0.15) = 0.620957; −log σ(−0.2) = log(1 + e^0.2) = 0.798139
    assert loss.tolist() == pytest.approx([0.620957047789532, 0.7981388693815917], abs=1e-6)
    assert loss.tolist() == pytest.approx([math.log1p(math.exp(-0.15)), math.log1p(math.exp(0.2))], abs=1e-6)


def test_ipo_equals_hand_computed_with_per_token_log_ratios():
    # IPO averages each log-ratio over its response tokens: pair 1: 0.5/2 − (−1/3) = 0.58333;
    # pair 2: −1/4 − 1/1 = −1.25.  Loss (h − 1/(2τ))², τ = β = 0.1 -> target 5.
    h = _h("ipo")
    assert h.tolist() == pytest.approx([0.5 / 2 + 1 / 3, -0.25 - 1.0])
    loss = preference_loss("ipo", h, BETA)
    assert loss.tolist() == pytest.approx([(0.58333333 - 5) ** 2, 39.0625], abs=1e-4)
    assert loss[0].item() == pytest.approx(19.506944444, abs=1e-4)


def test_ipo_needs_lengths():
    with pytest.raises(ValueError, match="per token"):
        log_ratio_difference("ipo", POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED)


def test_odpo_margin_shifts_the_sigmoid_and_hinge():
    margin = torch.tensor([1.0, 0.0])
    loss = preference_loss("sigmoid", H, BETA, margin)
    # −log σ(0.15 − 1) = 1.205865; the second pair has no margin
    assert loss.tolist() == pytest.approx([1.2058650684421959, 0.7981388693815917], abs=1e-6)
    hinge = preference_loss("hinge", H, BETA, margin)
    # max(0, 1 + Δ − β·h): 1 + 1 − 0.15 = 1.85; 1 + 0 + 0.2 = 1.2
    assert hinge.tolist() == pytest.approx([1.85, 1.2], abs=1e-6)
    # IPO has no margin term: the margin is ignored, not silently misapplied
    assert torch.equal(preference_loss("ipo", H, BETA, margin), preference_loss("ipo", H, BETA))


def test_robust_and_conservative_label_smoothing():
    eps, z = 0.1, BETA * H  # z = [0.15, −0.2]
    nls = lambda x: math.log1p(math.exp(-x))  # −log σ(x)
    robust = preference_loss("robust", H, BETA, label_smoothing=eps)
    expected = [((1 - eps) * nls(v) - eps * nls(-v)) / (1 - 2 * eps) for v in z.tolist()]
    assert robust.tolist() == pytest.approx(expected, abs=1e-6)
    conservative = preference_loss("conservative", H, BETA, label_smoothing=eps)
    expected = [(1 - eps) * nls(v) + eps * nls(-v) for v in z.tolist()]
    assert conservative.tolist() == pytest.approx(expected, abs=1e-6)
    # ε = 0 reduces both to DPO
    dpo = preference_loss("sigmoid", H, BETA)
    assert torch.allclose(preference_loss("robust", H, BETA, label_smoothing=0.0), dpo)
    assert torch.allclose(preference_loss("conservative", H, BETA, label_smoothing=0.0), dpo)


def test_every_loss_is_differentiable_and_decreases_when_h_grows():
    for name in LOSSES:
        h = torch.tensor([0.0, 1.0], requires_grad=True)
        preference_loss(name, h, BETA, torch.zeros(2), 0.1 if LOSSES[name].uses_label_smoothing else 0.0).sum() \
            .backward()
        assert (h.grad < 0).all(), name  # more separation between y_w and y_l always lowers the loss here


# ---------------------------------------------------------------------------------------------------
# Closed form: on a single-token bandit, DPO's optimum is π*(y) ∝ π_ref(y)·exp(r(y)/β)
# ---------------------------------------------------------------------------------------------------

def _bandit(seed: int, n: int, flip: float = 0.0):
    """Preferences between two arms drawn from π_ref, labelled by Bradley-Terry on a known reward."""
    g = torch.Generator().manual_seed(seed)
    ref_logits = torch.randn(6, generator=g)
    r = torch.tensor([1.0, 0.5, 0.0, -0.5, 0.8, -1.0])
    ref = torch.softmax(ref_logits, 0)
    a = torch.multinomial(ref, n, replacement=True, generator=g)
    b = torch.multinomial(ref, n, replacement=True, generator=g)
    a_wins = torch.rand(n, generator=g) < torch.sigmoid(r[a] - r[b])  # P(a ≻ b) = σ(r(a) − r(b))
    a_wins ^= torch.rand(n, generator=g) < flip  # label noise: each label flipped with probability ε
    chosen, rejected = torch.where(a_wins, a, b), torch.where(a_wins, b, a)
    keep = chosen != rejected
    return ref_logits, r, chosen[keep], rejected[keep]


def _fit_bandit(loss_type: str, ref_logits, chosen, rejected, beta: float, eps: float = 0.0) -> torch.Tensor:
    """Minimise the trainer's own loss over the policy's logits θ (π_θ = softmax θ), full batch."""
    theta = ref_logits.clone().requires_grad_(True)
    ref_logp = torch.log_softmax(ref_logits, 0)
    optimizer = torch.optim.Adam([theta], lr=0.05)
    for _ in range(600):
        logp = torch.log_softmax(theta, 0)
        h = log_ratio_difference(loss_type, logp[chosen], logp[rejected], ref_logp[chosen], ref_logp[rejected],
                                 torch.ones_like(chosen), torch.ones_like(rejected))
        loss = preference_loss(loss_type, h, beta, label_smoothing=eps).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.softmax(theta.detach(), 0)


def _tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * (p - q).abs().sum().item()


def test_dpo_reaches_the_kl_regularised_optimum_on_a_bandit():
    torch.manual_seed(0)
    beta = 0.5
    ref_logits, r, chosen, rejected = _bandit(seed=0, n=40_000)
    target = torch.softmax(torch.log_softmax(ref_logits, 0) + r / beta, 0)  # π* ∝ π_ref·exp(r/β)
    policy = _fit_bandit("sigmoid", ref_logits, chosen, rejected, beta)
    tv = _tv(policy, target)
    print(f"\nDPO bandit: TV(π_θ, π*) = {tv:.4f}, TV(π_ref, π*) = {_tv(torch.softmax(ref_logits, 0), target):.4f}")
    assert tv < 0.03
    assert _tv(torch.softmax(ref_logits, 0), target) > 0.2  # the optimum is far from where training started


def test_robust_dpo_recovers_the_optimum_under_label_noise_and_plain_dpo_does_not():
    torch.manual_seed(0)
    beta, eps = 0.5, 0.2
    ref_logits, r, chosen, rejected = _bandit(seed=1, n=60_000, flip=eps)
    target = torch.softmax(torch.log_softmax(ref_logits, 0) + r / beta, 0)
    robust_tv = _tv(_fit_bandit("robust", ref_logits, chosen, rejected, beta, eps), target)
    plain_tv = _tv(_fit_bandit("sigmoid", ref_logits, chosen, rejected, beta), target)
    print(f"\nnoisy bandit (ε={eps}): TV robust = {robust_tv:.4f}, TV plain DPO = {plain_tv:.4f}")
    assert robust_tv < 0.04
    assert plain_tv > 2 * robust_tv  # noise flattens plain DPO's policy; rDPO de-biases it
