"""Reward losses against hand-computed values and plain-Python reference loops."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from reward_model import losses as L


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


def _ref_plackett_luce(ranking: list[float]) -> float:
    """−Σ_k [r_k − log Σ_{j≥k} exp r_j], a plain loop."""
    return -sum(r - math.log(sum(math.exp(x) for x in ranking[k:])) for k, r in enumerate(ranking))


def test_bradley_terry_hand_values():
    # −log σ(2 − 1 − 0.5) = log(1 + e^−0.5) = 0.474077; −log σ(0) = log 2.
    out = L.bradley_terry(_t(2.0, 0.0), _t(1.0, 0.0), _t(0.5, 0.0))
    assert out.tolist() == pytest.approx([0.4740769841801067, math.log(2)], abs=1e-12)
    assert L.bradley_terry(_t(3.0), _t(1.0)).item() == pytest.approx(math.log1p(math.exp(-2.0)), abs=1e-12)


def test_tie_is_half_a_win_each():
    # Δ = 2: ½ log(1 + e^−2) + ½ log(1 + e^2) = ½ (0.126928 + 2.126928) = 1.126928.
    out = L.bradley_terry_tie(_t(3.0, 1.0), _t(1.0, 1.0))
    assert out.tolist() == pytest.approx([1.1269280110429727, math.log(2)], abs=1e-12)
    # Symmetric in its arguments, and minimal at Δ = 0 (gradient zero there).
    assert L.bradley_terry_tie(_t(1.0), _t(3.0)).item() == pytest.approx(out[0].item())
    r = _t(0.7, 0.7).requires_grad_()
    L.bradley_terry_tie(r[:1], r[1:]).sum().backward()
    assert r.grad.abs().max().item() < 1e-12


def test_plackett_luce_hand_value_and_reference_loop():
    # [3, 1, 0]: −(3 − log(e³ + e + 1)) − (1 − log(e + 1)) − 0 = 0.169846 + 0.313262 = 0.483108
    out = L.plackett_luce(_t(3.0, 1.0, 0.0).unsqueeze(0), torch.ones(1, 3, dtype=torch.bool))
    assert out.item() == pytest.approx(0.4831077, abs=1e-6)
    torch.manual_seed(0)
    rewards = torch.randn(5, 4, dtype=torch.float64)
    sizes = [4, 3, 2, 4, 3]
    mask = torch.arange(4).unsqueeze(0) < torch.tensor(sizes).unsqueeze(1)  # (5, 4)
    out = L.plackett_luce(rewards, mask)
    expected = [_ref_plackett_luce(rewards[i, :k].tolist()) for i, k in enumerate(sizes)]
    assert out.tolist() == pytest.approx(expected, abs=1e-10)


def test_plackett_luce_with_two_items_is_bradley_terry():
    rewards = _t(1.3, -0.4).unsqueeze(0)
    pl = L.plackett_luce(rewards, torch.ones(1, 2, dtype=torch.bool))
    assert pl.item() == pytest.approx(L.bradley_terry(_t(1.3), _t(-0.4)).item(), abs=1e-12)


def test_all_pairs_reference_loop():
    torch.manual_seed(1)
    rewards = torch.randn(3, 4, dtype=torch.float64)
    sizes = [4, 3, 2]
    mask = torch.arange(4).unsqueeze(0) < torch.tensor(sizes).unsqueeze(1)
    out = L.all_pairs_bradley_terry(rewards, mask)
    for b, k in enumerate(sizes):
        pairs = list(itertools.combinations(range(k), 2))
        ref = sum(math.log1p(math.exp(-(rewards[b, i] - rewards[b, j]).item())) for i, j in pairs) / len(pairs)
        assert out[b].item() == pytest.approx(ref, abs=1e-10)


def test_reward_centering_hand_values():
    rewards = _t(1.0, 2.0, 99.0, -3.0, 0.5, 0.0).view(2, 3)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert L.reward_centering(rewards, mask).tolist() == pytest.approx([9.0, 6.25])


def test_group_loss_routes_pairs_ties_and_rankings():
    rewards = _t(2.0, 1.0, 0.0, 1.0, 3.0, 0.0, 3.0, 1.0, 0.0).view(3, 3)
    mask = torch.tensor([[True, True, False], [True, True, False], [True, True, True]])
    margin = _t(0.5, 0.0, 0.0)
    tie = torch.tensor([False, True, False])
    out = L.group_loss(rewards, mask, margin, tie, ranking_loss="plackett_luce")
    assert out.tolist() == pytest.approx([0.4740769841801067, 1.1269280110429727, 0.4831077], abs=1e-6)
    out = L.group_loss(rewards, mask, margin, tie, ranking_loss="all_pairs")
    expected_all_pairs = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-3)) + math.log1p(math.exp(-1))) / 3
    assert out[2].item() == pytest.approx(expected_all_pairs, abs=1e-10)


def test_masked_rankings_have_finite_gradients():
    rewards = torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    loss = L.group_loss(rewards, mask, torch.zeros(2), torch.zeros(2, dtype=torch.bool)).sum()
    loss = loss + L.reward_centering(rewards, mask).sum()
    loss.backward()
    assert torch.isfinite(rewards.grad).all()
    assert (rewards.grad[0, 2:] == 0).all()  # padding gets no gradient


def test_loss_registry_names():
    assert set(L.RANKING_LOSSES) == {"plackett_luce", "all_pairs"}
    assert {"bradley_terry", "bradley_terry_tie", "reward_centering"} <= set(L.LOSSES)
