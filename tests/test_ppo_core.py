"""align.onpolicy.ppo_core against plain-Python references, hand-computed values and closed forms."""

import math

import pytest
import torch

from align.onpolicy.ppo_core import (
    KL_ESTIMATORS,
    LOSSES,
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    clipped_policy_loss,
    clipped_value_loss,
    compute_gae,
    entropy_from_logits,
    explained_variance,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
    shape_scores,
)


def _random_episode_batch(seed, B=6, T=9):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(B, T, generator=g)
    values = torch.randn(B, T, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    return rewards, values, mask, lengths


def _gae_loop(rewards, values, length, gamma, lam):
    """GAE for one episode straight from the definition: A_t = sum_l (gamma lam)^l delta_{t+l}."""
    deltas = []
    for t in range(length):
        next_value = values[t + 1] if t + 1 < length else 0.0
        deltas.append(rewards[t] + gamma * next_value - values[t])
    advantages = []
    for t in range(length):
        advantages.append(sum((gamma * lam) ** l * deltas[t + l] for l in range(length - t)))
    return advantages


@pytest.mark.parametrize("seed,gamma,lam", [(0, 1.0, 0.95), (1, 0.9, 0.5), (2, 0.99, 1.0), (3, 1.0, 0.0)])
def test_gae_matches_a_plain_python_loop(seed, gamma, lam):
    rewards, values, mask, lengths = _random_episode_batch(seed)
    advantages, returns = compute_gae(rewards, values, mask, gamma, lam)
    for b in range(rewards.shape[0]):
        n = int(lengths[b])
        expected = _gae_loop(rewards[b].tolist(), values[b].tolist(), n, gamma, lam)
        assert advantages[b, :n].tolist() == pytest.approx(expected, abs=1e-5)
        assert returns[b, :n].tolist() == pytest.approx([a + v for a, v in zip(expected, values[b, :n].tolist())],
                                                        abs=1e-5)
        assert advantages[b, n:].abs().sum() == 0  # padding carries nothing


def test_gae_with_lambda_one_and_gamma_one_is_return_minus_value():
    # lam = gamma = 1: A_t = (sum of rewards from t) - V(s_t), the Monte-Carlo advantage.
    rewards, values, mask, lengths = _random_episode_batch(4)
    advantages, _ = compute_gae(rewards, values, mask, 1.0, 1.0)
    reward_to_go = (rewards * mask).flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(advantages, (reward_to_go - values) * mask, atol=1e-5, rtol=0)


def test_masked_whiten_has_zero_mean_unit_variance_on_the_mask():
    rewards, _, mask, _ = _random_episode_batch(5)
    x = rewards * 3 + 7
    w = masked_whiten(x, mask)
    picked = w[mask.bool()]
    assert picked.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert picked.std().item() == pytest.approx(1.0, abs=1e-4)  # unbiased, like the masked_var inside
    assert w[~mask.bool()].abs().sum() == 0
    kept = masked_whiten(x, mask, shift_mean=False)[mask.bool()]
    assert kept.mean().item() == pytest.approx(x[mask.bool()].mean().item(), abs=1e-4)


def test_kl_penalised_rewards_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -0.2, 0.0]])
    ref_logprobs = torch.tensor([[-1.5, -1.0, -0.5], [-0.3, -0.2, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = kl_penalised_rewards(scores, logprobs, ref_logprobs, mask, beta=0.1, estimator="k1")
    # k1 = log pi - log pi_ref; R_t = -0.1 k1, and the score lands on each row's last real token.
    torch.testing.assert_close(kl, torch.tensor([[0.5, -1.0, 0.0], [0.2, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 2.0], [-0.02 - 1.0, 0.0, 0.0]]))
    # Summed over tokens: R(x, y) = r - beta * log(pi(y) / pi_ref(y))  [Ziegler eq. 2]
    total = rewards.sum(1)
    torch.testing.assert_close(total, scores - 0.1 * ((logprobs - ref_logprobs) * mask).sum(1))


def test_kl_estimators_k1_and_k3_are_unbiased_and_k3_is_nonnegative():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(7), 0)
    q = torch.softmax(torch.randn(7), 0)
    exact = (p * (p.log() - q.log())).sum().item()  # KL(p || q)
    y = torch.multinomial(p, 400_000, replacement=True)
    logp, logq = p.log()[y], q.log()[y]
    assert KL_ESTIMATORS["k1"](logp, logq).mean().item() == pytest.approx(exact, rel=0.03)
    k3 = KL_ESTIMATORS["k3"](logp, logq)
    assert k3.mean().item() == pytest.approx(exact, rel=0.03)
    assert (k3 >= 0).all() and (KL_ESTIMATORS["k2"](logp, logq) >= 0).all()


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 4)
    # ratios e^0.5 = 1.65 (clipped to 1.2), e^-0.5 = 0.61 (clipped to 0.8), 1.1, 0.9
    new = torch.tensor([[0.5, -0.5, math.log(1.1), math.log(0.9)]])
    adv = torch.tensor([[1.0, -1.0, -2.0, 2.0]])
    mask = torch.ones(1, 4)
    loss, stats = clipped_policy_loss(new, old, adv, mask, cliprange=0.2)
    # per token: max(-A r, -A clip(r)):
    #   A=+1, r=1.65: max(-1.65, -1.2) = -1.2 (clipped)    A=-1, r=0.61: max(0.61, 0.8) = 0.8 (clipped)
    #   A=-2, r=1.1: max(2.2, 2.2) = 2.2                     A=+2, r=0.9: max(-1.8, -1.8) = -1.8
    assert loss.item() == pytest.approx((-1.2 + 0.8 + 2.2 - 1.8) / 4, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    ratio = new.exp()
    assert stats["approx_kl"].item() == pytest.approx(((ratio - 1) - new).mean().item(), abs=1e-7)
    # Clipping that makes the objective worse is never chosen: pessimistic bound.
    loss_up, _ = clipped_policy_loss(torch.tensor([[-0.5]]), torch.zeros(1, 1), torch.tensor([[1.0]]),
                                     torch.ones(1, 1), 0.2)
    assert loss_up.item() == pytest.approx(-math.exp(-0.5), abs=1e-6)  # unclipped: r < 1 - eps with A > 0


def test_clipped_policy_loss_gradient_vanishes_where_clipped():
    new = torch.tensor([[0.5, 0.05]], requires_grad=True)
    loss, _ = clipped_policy_loss(new, torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), torch.ones(1, 2), 0.2)
    loss.backward()
    assert new.grad[0, 0] == 0  # ratio 1.65 > 1.2 with A > 0: no incentive to go further
    assert new.grad[0, 1] == pytest.approx(-math.exp(0.05) / 2)


def test_clipped_value_loss_by_hand():
    old_values = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, -0.1, 1.0]])
    returns = torch.tensor([[1.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, stats = clipped_value_loss(values, old_values, returns, mask, cliprange_value=0.2)
    # token 0: unclipped (0.5-1)^2 = 0.25, clipped V = 0.2 -> 0.64; max 0.64
    # token 1: unclipped (-0.1-1)^2 = 1.21, clipped V = -0.1 -> 1.21; max 1.21; token 2 masked out
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.21) / 2)
    assert stats["vf_clipfrac"].item() == pytest.approx(0.5)
    assert LOSSES["value"] is clipped_value_loss and LOSSES["policy"] is clipped_policy_loss


def test_entropy_and_explained_variance():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    assert entropy_from_logits(logits).item() == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))
    assert entropy_from_logits(torch.zeros(1, 8)).item() == pytest.approx(math.log(8))
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.5), returns, mask).item() == pytest.approx(0.0)


def test_adaptive_kl_controller_follows_ziegler_update():
    ctl = AdaptiveKLController(beta=0.1, target=6.0, horizon=10_000)
    # e = clip(9/6 - 1, -0.2, 0.2) = 0.2; beta <- 0.1 * (1 + 0.2 * 256 / 10000)
    assert ctl.update(9.0, 256) == pytest.approx(0.1 * (1 + 0.2 * 256 / 10_000))
    beta = ctl.value
    # e = 5/6 - 1 = -1/6 (inside the clip)
    assert ctl.update(5.0, 512) == pytest.approx(beta * (1 - (1 / 6) * 512 / 10_000))
    # KL far below target: beta shrinks at the clipped rate, steadily towards letting KL grow
    for _ in range(50):
        before = ctl.value
        ctl.update(0.0, 1000)
        assert ctl.value == pytest.approx(before * (1 - 0.2 * 0.1))
    restored = AdaptiveKLController(1.0, 6.0, 10_000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value
    assert FixedKLController(0.3).update(100.0, 10) == 0.3


def test_running_moments_match_the_moments_of_everything_seen():
    torch.manual_seed(0)
    chunks = [torch.randn(n) * 3 + 2 for n in (5, 17, 1, 40)]
    moments = RunningMoments()
    for chunk in chunks:
        moments.update(chunk)
    everything = torch.cat(chunks).double()
    assert moments.mean == pytest.approx(everything.mean().item(), abs=1e-9)
    assert moments.std == pytest.approx(everything.std(unbiased=False).item(), abs=1e-9)


def test_shape_scores_penalises_unterminated_then_normalises_then_clips():
    scores = torch.tensor([1.0, 2.0, 10.0])
    terminated = torch.tensor([True, False, True])
    assert shape_scores(scores, terminated).tolist() == [1.0, 2.0, 10.0]
    assert shape_scores(scores, terminated, missing_eos_penalty=1.5).tolist() == [1.0, 0.5, 10.0]
    moments = RunningMoments()
    moments.update(torch.tensor([0.0, 2.0]))  # mean 1, std 1
    shaped = shape_scores(scores, terminated, 1.5, moments, clip=3.0)
    assert shaped.tolist() == pytest.approx([0.0, -0.5, 3.0])


def test_masked_mean_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 100.0]])
    assert masked_mean(x, torch.tensor([[1, 1, 0]])).item() == 1.5
