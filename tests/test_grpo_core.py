"""align/onpolicy/grpo_core.py against hand-computed values."""

import math

import pytest
import torch

from align.onpolicy.grpo_core import (AGGREGATIONS, clipped_surrogate, group_advantages, grpo_loss,
                                      kl_penalised_sequence_rewards, rloo_advantages, rloo_loss)


def test_group_advantages_with_and_without_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5])  # two groups of 3
    # group 1: mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3)
    std = math.sqrt(1 / 3)
    expected = torch.tensor([(2 / 3) / std, (-1 / 3) / std, (-1 / 3) / std])
    got = group_advantages(rewards, 3, eps=0.0)
    assert torch.allclose(got[:3], expected, atol=1e-6)
    # group 2: mean 2/3 -> 1/3, -1/6, -1/6, divided by its own std
    std2 = torch.tensor([1.0, 0.5, 0.5]).std().item()
    assert torch.allclose(got[3:], torch.tensor([1 / 3, -1 / 6, -1 / 6]) / std2, atol=1e-6)
    assert torch.allclose(group_advantages(rewards, 3, scale_by_std=False),
                          torch.tensor([2 / 3, -1 / 3, -1 / 3, 1 / 3, -1 / 6, -1 / 6]), atol=1e-6)


def test_a_group_of_equal_rewards_teaches_nothing():
    assert torch.equal(group_advantages(torch.full((4,), 0.7), 4), torch.zeros(4))
    assert torch.allclose(rloo_advantages(torch.full((4,), 0.7), 4), torch.zeros(4))


def test_rloo_advantage_is_reward_minus_the_mean_of_the_others():
    rewards = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    expected = torch.tensor([1 - 4, 2 - 3.5, 6 - 1.5, 0 - 1.5, 0 - 1.5, 3 - 0])
    assert torch.allclose(rloo_advantages(rewards, 3), expected)
    # equivalently K/(K-1) (r - mean)
    assert torch.allclose(rloo_advantages(rewards, 3), 1.5 * group_advantages(rewards, 3, scale_by_std=False))
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(rewards, 1)


def test_kl_is_folded_into_the_sequence_reward_over_real_tokens_only():
    logprobs = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, -1.5, -0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards, kl = kl_penalised_sequence_rewards(torch.tensor([1.0, 0.0]), logprobs, ref, mask, beta=0.1)
    assert torch.allclose(kl, torch.tensor([0.5 - 1.0, 1.0]))
    assert torch.allclose(rewards, torch.tensor([1.0 + 0.05, -0.1]))


def test_clipped_surrogate_per_token():
    old = torch.zeros(2, 2)
    logprobs = torch.log(torch.tensor([[1.5, 0.9], [1.5, 0.5]]))  # ratios
    advantages = torch.tensor([1.0, -1.0])
    loss, clipped = clipped_surrogate(logprobs, old, advantages, cliprange=0.2)
    # A > 0: -min(r, clip(r)) ; A < 0: -min(-r, -clip(r)) = max(r, clip(r))
    assert torch.allclose(loss, torch.tensor([[-1.2, -0.9], [1.5, 0.8]]))
    assert clipped.tolist() == [[True, False], [False, True]]


def test_the_four_ways_of_averaging_tokens():
    per_token = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert AGGREGATIONS["sequence"](per_token, mask).item() == pytest.approx((1 + 4) / 2)  # per answer, then mean
    assert AGGREGATIONS["token"](per_token, mask).item() == pytest.approx(8 / 5)  # every token equal
    assert AGGREGATIONS["dr_grpo"](per_token, mask).item() == pytest.approx(8 / (2 * 4))  # constant normaliser
    assert AGGREGATIONS["sum"](per_token, mask).item() == pytest.approx((4 + 4) / 2)


def test_grpo_loss_adds_beta_k3_and_beta_zero_ignores_the_reference():
    logprobs = torch.log(torch.tensor([[0.5]]))
    ref = torch.log(torch.tensor([[0.25]]))
    advantages = torch.tensor([2.0])
    loss, stats = grpo_loss(logprobs, logprobs, ref, advantages, torch.ones(1, 1), cliprange=0.2, beta=0.1)
    k3 = 0.5 - 1 - math.log(0.5)  # ref/pi - 1 - log(ref/pi)
    assert loss.item() == pytest.approx(-2.0 + 0.1 * k3)
    assert stats["kl_k3"].item() == pytest.approx(k3) and stats["approx_kl"].item() == pytest.approx(0.0)
    loss0, stats0 = grpo_loss(logprobs, logprobs, ref + 100, advantages, torch.ones(1, 1), cliprange=0.2, beta=0.0)
    assert loss0.item() == pytest.approx(-2.0) and stats0["kl_k3"].item() == 0.0


def test_rloo_loss_gradient_is_reinforce():
    """At ratio 1 the gradient is -A * grad sum_t log pi(y_t), averaged over sequences."""
    logits = torch.zeros(2, 3, requires_grad=True)
    logprobs = torch.log_softmax(logits, -1)[:, :2]  # (N=2, T=2) of a toy policy
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    advantages = torch.tensor([1.0, -2.0])
    loss, _ = rloo_loss(logprobs, logprobs.detach(), advantages, mask, cliprange=0.2)
    loss.backward()
    logits2 = torch.zeros(2, 3, requires_grad=True)
    lp = torch.log_softmax(logits2, -1)[:, :2]
    (-(advantages * (lp * mask).sum(1)).mean()).backward()
    assert torch.allclose(logits.grad, logits2.grad)
