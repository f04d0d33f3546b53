"""The GRPO / RLOO iteration, read top to bottom against the papers (the loop before the on-policy core).

One iteration (`GroupRelativeTrainer.step`), after Shao et al. 2024 (GRPO, Alg. 1) and
Ahmadian et al. 2024 (RLOO):

  1. rollout     G answers y_1..y_G ~ pi_theta(. | q) to each prompt q, groups adjacent
  2. score       the graders' weighted mix r(q, y) in [0, 1] against q's reference; optional
                 length penalty
  3. old passes  log pi_old(y_t) and, when beta > 0, log pi_ref(y_t), without gradients
  4. advantages  GRPO: (r - mean_group) / std_group (or Dr. GRPO: no std)        [GRPO §4.1.2]
                 RLOO:  R = r - beta * KL folded in, then R_i - mean_{j != i} R_j  [RLOO Eq. 6]
  5. update      mu epochs over minibatches of the clipped surrogate (+ beta * k3 for GRPO),
                 token losses averaged by loss_type                               [GRPO Eq. 3]
  6. log         reward, each grader's mean, share of full marks, length, KL, clipfrac,
                 groups that teach nothing (all answers scored alike): the reward-hacking monitors

The equations live in align/grpo_core.py, the graders in align/graders/, sampling in
align/rollout.py. What is NOT here yet, because the shared on-policy core (branch `trainers`)
owns it: loading with precision from prefloop.hardware, accelerate, checkpoint + metadata +
resume, the prompt schedule and the `align grpo` / `align rloo` commands. `train` below runs
steps and saves the final policy, enough for tests and experiments.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from align.graders.mix import GraderMix
from align.grpo_config import GRPOConfig
from align.grpo_core import (
    ADVANTAGES,
    KL_ESTIMATORS,
    grpo_loss,
    kl_penalised_sequence_rewards,
    rloo_loss,
)
from align.rft_data import RFTExample
from align.rollout import (
    Rollout,
    causal_lm_parts,
    generate_responses,
    response_hidden_states,
    response_logprobs,
    token_logprobs,
)


def logprobs_with_grad(model, rollout: Rollout, rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """log pi(y_t) of the sampled tokens of `rows`, with gradients. -> (b, R), 0 on padding."""
    backbone, lm_head = causal_lm_parts(model)
    hidden = response_hidden_states(backbone, rollout.input_ids[rows], rollout.attention_mask[rows],
                                    rollout.prompt_ids.shape[1])  # (b, R, H)
    return token_logprobs(lm_head(hidden) / temperature, rollout.response_ids[rows]) * rollout.response_mask[rows]


class GroupRelativeTrainer:
    """GRPO or RLOO (cfg.algorithm) on a policy, its reference (None: LoRA adapter off) and RFT examples."""

    def __init__(self, cfg: GRPOConfig, policy, ref_model, tokenizer, examples: list[RFTExample],
                 mix: GraderMix | None = None):
        self.cfg, self.policy, self.ref_model, self.tokenizer = cfg, policy, ref_model, tokenizer
        self.examples = examples
        self.mix = mix or GraderMix()
        params = [p for p in policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, eps=cfg.adam_eps, weight_decay=0.0)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.policy.eval()  # no dropout: log pi must be the same at rollout and at update

    def batch(self, step: int) -> list[RFTExample]:
        """Examples for `step`, in order and round again (the core's shuffled schedule replaces this)."""
        n, size = len(self.examples), self.cfg.prompts_per_step
        return [self.examples[(step * size + i) % n] for i in range(size)]

    def step(self, examples: list[RFTExample]) -> tuple[dict[str, float], list[dict]]:
        cfg, G = self.cfg, self.cfg.num_generations
        grouped = [e for e in examples for _ in range(G)]  # (N = q * G,) the G answers to one prompt adjacent

        # 1. rollout: G answers per prompt at temperature T
        rollout = generate_responses(self.policy, self.tokenizer, [e.prompt for e in grouped], cfg.max_new_tokens,
                                     cfg.temperature, max_prompt_length=cfg.max_prompt_length)
        mask = rollout.response_mask.float()  # (N, R)
        lengths = mask.sum(1)  # (N,)

        # 2. score: the graders' mix in [0, 1], minus the optional length penalty
        graded = self.mix([e.prompt for e in grouped], rollout.texts, [e.reference for e in grouped],
                          [e.graders for e in grouped])
        scores = torch.tensor(graded.scores, dtype=torch.float32)  # (N,)
        scores = scores - cfg.length_penalty * lengths / cfg.max_new_tokens

        # 3. log pi_old and log pi_ref of the sampled tokens, no gradients
        old_logprobs = response_logprobs(self.policy, rollout, cfg.temperature)  # (N, R)
        ref_logprobs = self.reference_logprobs(rollout) if cfg.beta > 0 else old_logprobs

        # 4. advantages per answer: group-relative (GRPO) or leave-one-out on the KL-penalised reward (RLOO)
        rewards = scores
        if cfg.algorithm == "rloo":
            rewards, _ = kl_penalised_sequence_rewards(scores, old_logprobs, ref_logprobs, mask, cfg.beta)
            advantages = ADVANTAGES["rloo"](rewards, G)
        else:
            advantages = ADVANTAGES["grpo"](rewards, G, scale_by_std=cfg.scale_rewards)

        # 5. mu epochs of clipped-surrogate updates over shuffled minibatches
        update = self.update(rollout, old_logprobs, ref_logprobs, advantages)

        # 6. the monitors
        with torch.no_grad():
            stats = {
                "reward": float(scores.mean()),
                "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
                "full_marks": float((torch.tensor(graded.scores) >= 1.0).float().mean()),
                "zero_std_groups": float((scores.view(-1, G).std(1) == 0).float().mean()),
                "response_length": float(lengths.mean()),
                "terminated": float(rollout.terminated.float().mean()),
                "kl_k1": float((KL_ESTIMATORS["k1"](old_logprobs, ref_logprobs) * mask).sum(1).mean()),
                **{f"grader/{name}": _mean(column) for name, column in graded.components.items()},
                **update,
            }
        samples = [{"prompt": e.prompt, "response": text, "reward": r, "why": why}
                   for e, text, r, why in zip(grouped, rollout.texts, graded.scores, graded.reasons)]
        return stats, samples

    def reference_logprobs(self, rollout: Rollout) -> torch.Tensor:
        """log pi_ref: the frozen copy, or the same weights with the LoRA adapter switched off."""
        model = self.ref_model if self.ref_model is not None else self.policy
        adapter_off = self.policy.disable_adapter() if self.ref_model is None else contextlib.nullcontext()
        with adapter_off:
            return response_logprobs(model, rollout, self.cfg.temperature)

    def update(self, rollout: Rollout, old_logprobs, ref_logprobs, advantages) -> dict[str, float]:
        cfg = self.cfg
        mask = rollout.response_mask.float()
        totals: dict[str, float] = {}
        n_updates = 0
        for _ in range(cfg.num_iterations):
            order = torch.randperm(len(rollout), generator=self.generator)
            for start in range(0, len(rollout), cfg.mini_batch_size):
                rows = order[start:start + cfg.mini_batch_size]
                logprobs = logprobs_with_grad(self.policy, rollout, rows, cfg.temperature)  # (b, R)
                if cfg.algorithm == "rloo":
                    loss, stats = rloo_loss(logprobs, old_logprobs[rows], advantages[rows], mask[rows], cfg.cliprange)
                else:
                    loss, stats = grpo_loss(logprobs, old_logprobs[rows], ref_logprobs[rows], advantages[rows],
                                            mask[rows], cfg.cliprange, cfg.beta, cfg.loss_type)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                for key, value in {"loss": loss.detach(), "grad_norm": grad_norm, **stats}.items():
                    totals[key] = totals.get(key, 0.0) + float(value)
                n_updates += 1
        return {key: value / n_updates for key, value in totals.items()}

    def train(self, logger=None) -> list[dict[str, float]]:
        """cfg.steps iterations; metrics to `logger` (prefloop.metrics.MetricsLogger) when given. -> all stats."""
        from tqdm.auto import tqdm

        history = []
        bar = tqdm(range(self.cfg.steps), desc=self.cfg.algorithm, dynamic_ncols=True)
        for step in bar:
            stats, _ = self.step(self.batch(step))
            history.append(stats)
            if logger is not None:
                logger.log(step, stats)
            bar.set_postfix(reward=f"{stats['reward']:.3f}", len=f"{stats['response_length']:.1f}")
        return history

    def save_policy(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        self.policy.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        return out


def _mean(column: list) -> float | None:
    values = [v for v in column if v is not None]
    return sum(values) / len(values) if values else None

