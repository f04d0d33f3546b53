"""`align grpo` and `align rloo`: group-relative RL with graders, on the on-policy loop (align/onpolicy/loop.py).

One step, after Shao et al. 2024 (GRPO, Alg. 1) and Ahmadian et al. 2024 (RLOO); steps 1 and 6 are the
loop's, the rest is `GroupRelative` below:

  1. rollout     G answers y_1..y_G ~ pi_theta(. | q) to each prompt q, prompt-major
  2. score       the graders' weighted mix r(q, y) in [0, 1] against q's reference (and the reward
                 model, when given, as one component); optional length penalty
  3. old passes  log pi_old(y_t) and, when beta > 0, log pi_ref(y_t), without gradients
  4. advantages  GRPO: (r - mean_group) / std_group, or Dr. GRPO without the std  [GRPO §4.1.2]
                 RLOO: R = r - beta * KL folded in, then R_i - mean_{j != i} R_j     [RLOO Eq. 6]
  5. update      mu epochs over minibatches: clipped surrogate (+ beta * k3 for GRPO), token
                 losses averaged by loss_type                                      [GRPO Eq. 3]
  6. log         reward, each grader's mean, the share of full marks, completion length, KL,
                 clip_ratio, groups that teach nothing: the reward-hacking monitors, plotted at the end

The equations are align/onpolicy/grpo_core.py's, the graders align/graders/'s.

Launch:  align grpo --prompts tasks.jsonl --graders math --max-steps 200
         align rloo --config configs/rloo.yaml
"""

from __future__ import annotations

from pathlib import Path

import torch

from align.graders.mix import GraderMix, GraderSpec, load_grader_spec, parse_grader_spec
from align.onpolicy.engine import global_share
from align.onpolicy.grpo_core import ADVANTAGES, KL_ESTIMATORS, grpo_loss, kl_penalised_sequence_rewards, rloo_loss
from align.onpolicy.loop import Algorithm, OnPolicyTrainer, Scored, sample
from align.onpolicy.ppo_core import masked_mean
from align.onpolicy.rft_data import RFTExample, load_rft_dataset
from align.onpolicy.rollout import Rollout, select
from align.onpolicy.toolkit import check_scores

GRPO_PLOTS = (("reward.png", ("reward", "full_marks"), "reward in [0, 1]", None),
              ("monitors.png", ("completions/mean_length",), "answer tokens", "kl"))


def main(argv: list[str]) -> int:
    from align.onpolicy.grpo_config import GRPOConfig
    from prefloop.config import parse_config

    train_group_relative(parse_config(GRPOConfig, argv, prog="align grpo"))
    return 0


def main_rloo(argv: list[str]) -> int:
    from align.onpolicy.grpo_config import RLOOConfig
    from prefloop.config import parse_config

    train_group_relative(parse_config(RLOOConfig, argv, prog="align rloo"))
    return 0


def train_group_relative(cfg) -> Path:
    """GRPO or RLOO (cfg.algorithm); returns the directory of the final model (OUT/final)."""
    return OnPolicyTrainer(cfg, GroupRelative(cfg)).train()


def load_examples(cfg) -> tuple[list[RFTExample], list[RFTExample], dict]:
    """(training examples, held-out examples, source), each with its graders (+ the reward model)."""
    default = None
    if cfg.graders:
        from prefloop.config import shipped_configs

        # a YAML mix: a file, or a shipped one by name (`graders_example`); else a grader's name
        is_file = (cfg.graders.endswith((".yaml", ".yml")) or Path(cfg.graders).is_file()
                   or cfg.graders in shipped_configs())
        default = load_grader_spec(cfg.graders) if is_file else parse_grader_spec(cfg.graders, "--graders")
    fields = dict(prompt_field=cfg.prompt_field, reference_field=cfg.reference_field, sql_dir=cfg.sql_dir)
    examples = load_rft_dataset(cfg.prompts, default, store=cfg.store, project=cfg.project, limit=cfg.max_prompts,
                                **fields)
    eval_examples = load_rft_dataset(cfg.eval_prompts, default, **fields) if cfg.eval_prompts else []
    if cfg.reward_model:
        extra = GraderSpec("reward_model", cfg.reward_model_weight, {"path": cfg.reward_model})
        examples, eval_examples = ([RFTExample(e.prompt, e.reference, e.graders + (extra,), e.meta) for e in part]
                                   for part in (examples, eval_examples))
    source = {"kind": "store" if cfg.store else "file", "path": cfg.prompts or cfg.project,
              "num_prompts": len(examples), "eval_prompts": cfg.eval_prompts}
    return examples, eval_examples, source


class GroupRelative(Algorithm):
    """Steps 2-5 of a GRPO or RLOO step (the module head), and the held-out evaluation."""

    plots = GRPO_PLOTS

    def __init__(self, cfg):
        super().__init__(cfg)
        self.command, self.num_generations = f"align {cfg.algorithm}", cfg.num_generations
        self.mix = None

    # -- data and reward: RFT examples graded by their graders' mix ----------------------------------------

    def load_tasks(self) -> tuple[list, list, dict]:
        return load_examples(self.cfg)

    def prompt(self, task: RFTExample):
        return task.prompt

    def load_reward(self, probe_task: RFTExample, device) -> None:
        """Score an empty answer once: a reference query that fails or an unloadable reward model stops here."""
        self.mix = GraderMix(device=device, budget=self.cfg.grade_budget())
        self.mix([probe_task.prompt], [""], [probe_task.reference], [probe_task.graders])

    def score(self, step: int, tasks: list[RFTExample], rollout: Rollout) -> Scored:
        """The mix over the prompt-major rollout (each example's G answers adjacent)."""
        repeated = [e for e in tasks for _ in range(len(rollout) // len(tasks))]
        graded = self.mix([e.prompt for e in repeated], rollout.texts, [e.reference for e in repeated],
                          [e.graders for e in repeated])
        scores = check_scores("of the graders", graded.scores, len(rollout)).to(self.engine.acc.device)
        return Scored(step, tasks, rollout, scores, graded.components, graded.reasons)

    @property
    def needs_reference(self) -> bool:
        return self.cfg.beta > 0  # beta = 0 never asks pi_ref: no frozen copy to load

    def describe(self) -> str:
        return f"G={self.cfg.num_generations}, beta={self.cfg.beta}, "

    def record(self) -> dict:
        return {"graders": self.cfg.graders}

    # -- 2-4: from a scored rollout to advantages -------------------------------------------------------

    def advantages(self, scored: Scored) -> dict:
        cfg, G, rollout = self.cfg, self.cfg.num_generations, scored.rollout
        mask = rollout.response_mask.float()  # (N, R)

        # 2. the length penalty on the graders' mix
        scores = scored.scores - cfg.length_penalty * mask.sum(1) / cfg.max_new_tokens  # (N,)

        # 3. log pi_old and log pi_ref of the sampled tokens, without gradients. When the rollout feeds exactly
        # one optimizer step (mu = 1, one minibatch) pi_old is the policy the update's forward runs on, so the
        # update takes its own detached log-probs (ratio 1) instead of a separate pass (as TRL does then);
        # RLOO's KL-in-the-reward needs them before the advantages, so it keeps the pass when beta > 0.
        reuse = (cfg.num_iterations == 1 and cfg.mini_batch_size >= len(rollout)
                 and not (cfg.algorithm == "rloo" and cfg.beta > 0))
        with torch.no_grad(), self.engine.acc.autocast():
            old_logprobs = None if reuse else self.pair.logprobs(rollout, cfg.temperature)  # (N, R)
            ref_logprobs = (self.pair.logprobs(rollout, cfg.temperature, reference=True) if cfg.beta > 0
                            else old_logprobs)

        # 4. advantages per answer: group-relative (GRPO) or leave-one-out on the KL-penalised reward (RLOO)
        if cfg.algorithm == "rloo":
            rewards = (scores if old_logprobs is None  # beta = 0 (see reuse): R = r
                       else kl_penalised_sequence_rewards(scores, old_logprobs, ref_logprobs, mask, cfg.beta)[0])
            advantages = ADVANTAGES["rloo"](rewards, G)
        else:
            advantages = ADVANTAGES["grpo"](scores, G, scale_by_std=cfg.scale_rewards)
        stats = {"full_marks": (scored.scores >= 1.0).float().mean(),
                 "frac_reward_zero_std": (scores.view(-1, G).std(1) == 0).float().mean()}
        if old_logprobs is not None and cfg.beta > 0:  # the sequence KL to pi_ref (else: the update's forward)
            stats["kl"] = (KL_ESTIMATORS["k1"](old_logprobs, ref_logprobs) * mask).sum(1).mean()
        return {"rollout": rollout, "old_logprobs": old_logprobs, "ref_logprobs": ref_logprobs,
                "advantages": advantages, "step": scored.step, "stats": stats}

    # -- 5: the update ----------------------------------------------------------------------------------

    def update(self, batch: dict) -> dict:
        """mu epochs of clipped-surrogate updates over shuffled minibatches."""
        cfg, engine, rollout = self.cfg, self.engine, batch["rollout"]
        old_logprobs, ref_logprobs, advantages = batch["old_logprobs"], batch["ref_logprobs"], batch["advantages"]
        totals, n_updates = {}, 0
        for rows in engine.minibatches(len(rollout), cfg.mini_batch_size, cfg.num_iterations, batch["step"]):
            mb = select(rollout, rows)
            width = mb.response_ids.shape[1]  # select trims to the longest response of these rows
            mask = mb.response_mask.float()
            with engine.acc.autocast():
                logprobs, entropy = self.pair.logprobs(mb, cfg.temperature, entropy=True)  # (b, r), with gradients
            if old_logprobs is None:  # one minibatch, mu = 1: pi_old is this very forward (see advantages)
                old = logprobs.detach()
                ref = old if ref_logprobs is None else ref_logprobs[rows, :width]
            else:
                old, ref = old_logprobs[rows, :width], ref_logprobs[rows, :width]
            if cfg.algorithm == "rloo":
                loss, stats = rloo_loss(logprobs, old, advantages[rows], mask, cfg.cliprange)
            else:
                loss, stats = grpo_loss(logprobs, old, ref, advantages[rows], mask, cfg.cliprange, cfg.beta,
                                        cfg.loss_type)
            if cfg.loss_type == "token":  # a mean over the global minibatch's tokens, whatever the process count
                loss = loss * global_share(engine, mask.sum(), engine.sum(mask.sum()))
            engine.backward(loss)
            grad_norm = engine.step({"loss": loss.detach()})
            if old_logprobs is None and cfg.beta > 0:  # the sequence KL to pi_ref the step logs, from this forward
                stats["kl"] = (KL_ESTIMATORS["k1"](old, ref) * mask).sum(1).mean()
            stats = {"loss": loss.detach(), "grad_norm": grad_norm, "entropy": masked_mean(entropy, mask),
                     "clip_ratio": stats.pop("clipfrac"), **stats}
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + float(value)
            n_updates += 1
        return {**batch["stats"], **{key: value / n_updates for key, value in totals.items()}}

    # -- held-out evaluation ------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, tasks: list[RFTExample]) -> dict[str, float]:
        """Mean reward and share of full marks of one answer per held-out prompt (the same noise every time)."""
        rollout = sample(self, tasks, 1, seed=self.cfg.seed + 10_000)
        scores = self.score(-1, tasks, rollout).scores
        return {"reward": scores.mean().item(), "full_marks": (scores >= 1.0).float().mean().item()}


if __name__ == "__main__":  # `python -m align.onpolicy.grpo_trainer ...`
    import sys

    from prefloop.cli import run_main

    raise SystemExit(run_main(main, sys.argv[1:], "align grpo"))
