"""What GRPO and RLOO converge to on a single-token bandit, against closed forms.

The policy is a softmax over 8 actions (a table of logits: the exact tabular case of a
one-token response), trained with the functions of align/onpolicy/grpo_core.py on fresh samples every
step, as the trainers use them. The maths under test is the trainer's; only the model is a table.

  RLOO, KL in the reward  -> pi*(y) ∝ pi_ref(y) exp(r(y) / beta)   (as PPO and DPO: test_ppo_bandit.py)
  Dr. GRPO, k3 in the loss -> dr_grpo_fixed_point(...)            (a different policy: see grpo_core's head)
  GRPO with std            -> the same policy whatever the reward's scale and shift
"""

import torch

from align.onpolicy.grpo_core import (dr_grpo_fixed_point, group_advantages, grpo_loss, kl_penalised_sequence_rewards,
                                      rloo_advantages, rloo_loss)

BETA = 0.5
R = torch.tensor([1.0, 0.5, 0.0, -0.5, 0.25, -1.0, 0.0, 0.75], dtype=torch.float64)


def tv(p, q) -> float:
    return 0.5 * (p - q).abs().sum().item()


def reference_policy() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.softmax(torch.randn(8, generator=generator, dtype=torch.float64), 0)


def train(algorithm: str, pi_ref, rewards, group_size: int, steps: int = 600, n_prompts: int = 64,
          scale_by_std: bool = False, seed: int = 0) -> torch.Tensor:
    """On-policy updates of a tabular softmax policy; Adam with a linear decay to 0 averages out the noise."""
    torch.manual_seed(seed)
    logits = pi_ref.log().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / steps)
    ones = torch.ones(n_prompts * group_size, 1, dtype=torch.float64)  # mask (N, T=1)
    for _ in range(steps):
        # 1. rollout: K answers to each of n_prompts copies of the one prompt
        y = torch.multinomial(torch.softmax(logits.detach(), 0), n_prompts * group_size, replacement=True)  # (N,)
        logprobs = torch.log_softmax(logits, 0)[y].unsqueeze(1)  # (N, 1)
        old, ref = logprobs.detach(), pi_ref.log()[y].unsqueeze(1)
        # 2. score, 3. advantages, 4. loss
        if algorithm == "rloo":
            sequence_rewards, _ = kl_penalised_sequence_rewards(rewards[y], old, ref, ones, BETA)
            loss, _ = rloo_loss(logprobs, old, rloo_advantages(sequence_rewards, group_size), ones, cliprange=0.2)
        else:
            advantages = group_advantages(rewards[y], group_size, scale_by_std=scale_by_std)
            loss, _ = grpo_loss(logprobs, old, ref, advantages, ones, cliprange=0.2, beta=BETA, loss_type="token")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return torch.softmax(logits.detach(), 0)


def test_rloo_with_the_kl_in_the_reward_reaches_the_kl_regularised_optimum():
    pi_ref = reference_policy()
    pi_star = pi_ref * torch.exp(R / BETA)
    pi_star /= pi_star.sum()
    assert tv(pi_ref, pi_star) > 0.25  # far from where training starts
    pi = train("rloo", pi_ref, R, group_size=4)
    print(f"\nRLOO bandit: TV(pi, pi*) = {tv(pi, pi_star):.4f}")
    assert tv(pi, pi_star) <= 0.05


def test_dr_grpo_reaches_its_own_fixed_point_not_the_exponential_tilt():
    """k3 in the loss is the gradient of KL(pi_ref || pi), and the group mean includes the answer itself."""
    pi_ref = reference_policy()
    pi_star = pi_ref * torch.exp(R / BETA)
    pi_star /= pi_star.sum()
    target = dr_grpo_fixed_point(pi_ref, R, BETA, group_size=2)
    assert tv(target, pi_star) > 0.1  # the two closed forms differ clearly for K = 2
    pi = train("grpo", pi_ref, R, group_size=2)
    print(f"\nDr. GRPO bandit: TV(pi, fixed point) = {tv(pi, target):.4f}, TV(pi, pi*) = {tv(pi, pi_star):.4f}")
    assert tv(pi, target) <= 0.05
    assert tv(pi, pi_star) > 0.08


def test_dr_grpo_fixed_point_is_stationary():
    """The closed form zeroes the expected gradient c·pi(r - E_pi r) - beta(pi - pi_ref) of every logit."""
    pi_ref = reference_policy()
    for k in (2, 4, 16):
        pi = dr_grpo_fixed_point(pi_ref, R, BETA, group_size=k)
        c = (k - 1) / k
        gradient = c * pi * (R - (pi * R).sum()) - BETA * (pi - pi_ref)
        assert gradient.abs().max() < 1e-9 and abs(pi.sum().item() - 1) < 1e-12


def test_grpo_with_std_normalisation_ignores_the_rewards_scale_and_shift():
    pi_ref = reference_policy()
    binary = (R > 0.3).double()  # pass/fail, as most graders
    pi = train("grpo", pi_ref, binary, group_size=4, steps=150, scale_by_std=True)
    pi_scaled = train("grpo", pi_ref, 10 * binary - 3, group_size=4, steps=150, scale_by_std=True)
    assert (pi * binary).sum() > (pi_ref * binary).sum() + 0.2  # it learnt to pass
    assert tv(pi, pi_scaled) < 0.01
