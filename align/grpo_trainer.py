"""`align grpo` and `align rloo`: group-relative RL with graders, on the on-policy core (align/onpolicy.py).

One step (`GroupRelative.step`), after Shao et al. 2024 (GRPO, Alg. 1) and Ahmadian et al. 2024 (RLOO):

  1. rollout     G answers y_1..y_G ~ pi_theta(. | q) to each prompt q, prompt-major  (PolicyPair.sample)
  2. score       the graders' weighted mix r(q, y) in [0, 1] against q's reference (and the reward
                 model, when given, as one component); optional length penalty
  3. old passes  log pi_old(y_t) and, when beta > 0, log pi_ref(y_t), without gradients
  4. advantages  GRPO: (r - mean_group) / std_group, or Dr. GRPO without the std  [GRPO §4.1.2]
                 RLOO: R = r - beta * KL folded in, then R_i - mean_{j != i} R_j     [RLOO Eq. 6]
  5. update      mu epochs over minibatches: clipped surrogate (+ beta * k3 for GRPO), token
                 losses averaged by loss_type                                      [GRPO Eq. 3]
  6. log         reward, each grader's mean, the share of full marks, response length, KL,
                 clipfrac, groups that teach nothing: the reward-hacking monitors, plotted at the end

The equations are align/grpo_core.py's, the graders align/graders/'s; the scaffolding (run directory,
precision, policy and reference, prompt schedule, checkpoints, resume) is align/onpolicy.py's.

Launch:  align grpo --prompts tasks.jsonl --graders math --max-steps 200
         align rloo --config configs/rloo.yaml
"""

from __future__ import annotations

from pathlib import Path

import torch

from align import onpolicy
from align.graders.mix import GraderMix, GraderSpec, load_grader_spec, parse_grader_spec
from align.grpo_core import ADVANTAGES, KL_ESTIMATORS, grpo_loss, kl_penalised_sequence_rewards, rloo_loss
from align.prompts import as_conversation
from align.rft_data import RFTExample, load_rft_dataset
from align.rollout import Rollout, select

GRPO_PLOTS = (("reward.png", ("reward", "full_marks"), "reward in [0, 1]", None),
              ("monitors.png", ("response_length",), "answer tokens", "kl_k1"))


def main(argv: list[str]) -> int:
    from align.grpo_config import GRPOConfig
    from prefloop.config import parse_config

    train_group_relative(parse_config(GRPOConfig, argv, prog="align grpo"))
    return 0


def main_rloo(argv: list[str]) -> int:
    from align.grpo_config import RLOOConfig
    from prefloop.config import parse_config

    train_group_relative(parse_config(RLOOConfig, argv, prog="align rloo"))
    return 0


def train_group_relative(cfg) -> Path:
    """GRPO or RLOO (cfg.algorithm); returns the directory of the final model (OUT/final)."""
    from tqdm.auto import trange

    from align.reporting import log_samples, save_plots
    from align.train_common import save_final
    from prefloop.run import lineage

    # 0. data and graders checked (rows refused before anything is written), run directory and precision;
    # one probe of the graders before any model loads
    examples, eval_examples, source = load_examples(cfg)
    run, acc = onpolicy.start(cfg, f"align {cfg.algorithm}")
    trainer = GroupRelative(cfg, acc, examples + eval_examples)
    trainer.probe(examples[0])
    start = onpolicy.load_checkpoint(acc, run)
    # lineage: the parent model and, for the usual SFT-then-RFT recipe, the SFT run and its data
    run.save(**lineage(cfg.model), prompts=source, graders=cfg.graders,
             reward_model=cfg.reward_model or None, num_processes=acc.num_processes)
    if run.main:
        print(f"[prefloop] {cfg.algorithm}: {len(examples)} prompts, {len(eval_examples)} held out, "
              f"G={cfg.num_generations}, beta={cfg.beta}, {'LoRA' if cfg.lora else 'full fine-tuning'}, "
              f"{acc.num_processes} process(es)")
    # several processes: each its own batch_size prompts of the step (the global batch is N x batch_size)
    schedule = onpolicy.PromptSchedule(examples, cfg.batch_size, cfg.seed, acc.num_processes, acc.process_index)
    logger = run.metrics_logger()
    before, after = run.record.get("eval_before", {}), {}
    if eval_examples and start == 0:
        before = trainer.evaluate(eval_examples)
        logger.log(0, {f"eval/{k}": v for k, v in before.items()})
        run.save(eval_before=before)
    bar = trange(start, cfg.max_steps, desc=cfg.algorithm, initial=start, total=cfg.max_steps,
                 disable=not run.main)
    for step in bar:
        stats, samples = trainer.step(step, schedule.batch(step))
        logger.log(step + 1, stats)
        bar.set_postfix(reward=f"{stats['reward']:.3f}", len=f"{stats['response_length']:.1f}")
        if run.main and cfg.sample_every and step % cfg.sample_every == 0:
            log_samples(step + 1, samples[:8], logger, bar, run.dir / "samples.jsonl")
        last = step + 1 == cfg.max_steps
        if (step + 1) % cfg.save_steps == 0 and not last:
            logger.flush()
            onpolicy.save_checkpoint(acc, run, step + 1, cfg.save_total_limit)
    if eval_examples:
        after = trainer.evaluate(eval_examples)
        logger.log(cfg.max_steps, {f"eval/{k}": v for k, v in after.items()})
    logger.close()
    if run.main:
        save_plots(run.metrics_path, run.dir, GRPO_PLOTS)
    return save_final(trainer.pair.policy, trainer.pair.tokenizer, cfg, run,
                      {"eval_before": before, "eval_after": after})


def load_examples(cfg) -> tuple[list[RFTExample], list[RFTExample], dict]:
    """(training examples, held-out examples, source), each with its graders (+ the reward model)."""
    default = None
    if cfg.graders:
        is_file = cfg.graders.endswith((".yaml", ".yml")) or Path(cfg.graders).is_file()
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


class GroupRelative:
    """One GRPO or RLOO step, and the held-out evaluation."""

    def __init__(self, cfg, accelerator, examples: list[RFTExample]):
        self.cfg, self.acc = cfg, accelerator
        # beta = 0 never asks pi_ref (the KL term and its log-probs are skipped): no frozen copy to load
        pair = onpolicy.load_policy_pair(cfg, accelerator.device, [e.prompt for e in examples],
                                         need_reference=cfg.beta > 0)
        optimizer = torch.optim.AdamW([p for p in pair.policy.parameters() if p.requires_grad],
                                      lr=cfg.learning_rate, weight_decay=0.0, fused=True)
        pair.policy, self.optimizer = accelerator.prepare(pair.policy, optimizer)
        # The module itself (sampling, the adapter switched off for pi_ref, the one log-prob path); under
        # several processes onpolicy.average_gradients averages its gradients.
        pair.policy = accelerator.unwrap_model(pair.policy)
        self.pair = pair
        self.mix = GraderMix(device=accelerator.device, budget=cfg.grade_budget())

    def probe(self, example: RFTExample) -> None:
        """Score an empty answer once: a reference query that fails or an unloadable reward model stops here."""
        self.mix([example.prompt], [""], [example.reference], [example.graders])

    def grade(self, examples: list[RFTExample], rollout: Rollout):
        """The mix over the prompt-major rollout (each example's G answers adjacent)."""
        repeated = [e for e in examples for _ in range(len(rollout) // len(examples))]
        return self.mix([e.prompt for e in repeated], rollout.texts, [e.reference for e in repeated],
                        [e.graders for e in repeated])

    def step(self, step: int, examples: list[RFTExample]) -> tuple[dict[str, float], list[dict]]:
        cfg, G = self.cfg, self.cfg.num_generations
        # a resumed run samples exactly what the first would have; each process its own noise
        torch.manual_seed(cfg.seed + step + onpolicy.PROCESS_SEED_STRIDE * self.acc.process_index)

        # 1. rollout: G answers per prompt at temperature T
        self.pair.policy.eval()
        with self.acc.autocast():
            rollout = self.pair.sample([e.prompt for e in examples], G, cfg.max_new_tokens, cfg.temperature,
                                       max_prompt_length=cfg.max_prompt_length)
        mask = rollout.response_mask.float()  # (N, R)
        lengths = mask.sum(1)  # (N,)

        # 2. score: the graders' mix in [0, 1], minus the optional length penalty
        graded = self.grade(examples, rollout)
        scores = torch.tensor(graded.scores, dtype=torch.float32, device=mask.device)  # (N,)
        scores = scores - cfg.length_penalty * lengths / cfg.max_new_tokens

        # 3. log pi_old and log pi_ref of the sampled tokens, without gradients. When the rollout feeds exactly
        # one optimizer step (mu = 1, one minibatch) pi_old is the policy the update's forward runs on, so the
        # update takes its own detached log-probs (ratio 1) instead of a separate pass (as TRL does then);
        # RLOO's KL-in-the-reward needs them before the advantages, so it keeps the pass when beta > 0.
        reuse = (cfg.num_iterations == 1 and cfg.mini_batch_size >= len(rollout)
                 and not (cfg.algorithm == "rloo" and cfg.beta > 0))
        with torch.no_grad(), self.acc.autocast():
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

        # 5. mu epochs of clipped-surrogate updates over shuffled minibatches
        update = self.update(step, rollout, old_logprobs, ref_logprobs, advantages)
        kl_k1 = (update.pop("kl_k1") if old_logprobs is None
                 else (KL_ESTIMATORS["k1"](old_logprobs, ref_logprobs) * mask).sum(1).mean().item())

        # 6. the monitors
        stats = {
            "reward": scores.mean().item(),
            "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
            "full_marks": sum(s >= 1.0 for s in graded.scores) / len(graded.scores),
            "zero_std_groups": (scores.view(-1, G).std(1) == 0).float().mean().item(),
            "response_length": lengths.mean().item(),
            "terminated": rollout.terminated.float().mean().item(),
            "kl_k1": kl_k1,
            **{f"grader/{name}": _mean(column) for name, column in graded.components.items()},
            **update,
        }
        stats = onpolicy.mean_over_processes(self.acc, stats)  # every process's groups
        repeated = [e for e in examples for _ in range(G)]
        samples = [{"prompt": as_conversation(e.prompt), "response": text, "score": r, "why": why}
                   for e, text, r, why in zip(repeated, rollout.texts, graded.scores, graded.reasons)]
        return stats, samples

    def update(self, step: int, rollout: Rollout, old_logprobs, ref_logprobs, advantages) -> dict[str, float]:
        cfg = self.cfg
        self.pair.policy.train()
        generator = torch.Generator().manual_seed(cfg.seed + step)  # resumable minibatch order
        totals, n_updates = {}, 0
        for _ in range(cfg.num_iterations):
            for rows in torch.randperm(len(rollout), generator=generator).split(cfg.mini_batch_size):
                mb = select(rollout, rows)
                width = mb.response_ids.shape[1]  # select trims to the longest response of these rows
                mask = mb.response_mask.float()
                with self.acc.autocast():
                    logprobs = self.pair.logprobs(mb, cfg.temperature)  # (b, r), with gradients
                if old_logprobs is None:  # one minibatch, mu = 1: pi_old is this very forward (see step)
                    old = logprobs.detach()
                    ref = old if ref_logprobs is None else ref_logprobs[rows, :width]
                else:
                    old, ref = old_logprobs[rows, :width], ref_logprobs[rows, :width]
                if cfg.algorithm == "rloo":
                    loss, stats = rloo_loss(logprobs, old, advantages[rows], mask, cfg.cliprange)
                else:
                    loss, stats = grpo_loss(logprobs, old, ref, advantages[rows], mask, cfg.cliprange, cfg.beta,
                                            cfg.loss_type)
                self.optimizer.zero_grad(set_to_none=True)
                self.acc.backward(loss)
                onpolicy.average_gradients(self.acc, self.pair.policy.parameters())
                grad_norm = onpolicy.clip_gradients(self.acc, self.pair.policy.parameters(), cfg.max_grad_norm,
                                                    {"loss": loss.detach()})
                self.optimizer.step()
                if old_logprobs is None:  # the sequence KL to pi_ref the step logs, from this forward
                    stats["kl_k1"] = (KL_ESTIMATORS["k1"](old, ref) * mask).sum(1).mean()
                for key, value in {"loss": loss.detach(), "grad_norm": grad_norm, **stats}.items():
                    totals[key] = totals.get(key, 0.0) + float(value)
                n_updates += 1
        self.pair.policy.eval()
        return {key: value / n_updates for key, value in totals.items()}

    @torch.no_grad()
    def evaluate(self, examples: list[RFTExample]) -> dict[str, float]:
        """Mean reward and share of full marks of one answer per held-out prompt (the same noise every time)."""
        self.pair.policy.eval()
        with self.acc.autocast():
            rollout = self.pair.sample([e.prompt for e in examples], 1, self.cfg.max_new_tokens,
                                       self.cfg.temperature, max_prompt_length=self.cfg.max_prompt_length,
                                       seed=self.cfg.seed + 10_000)
        scores = self.grade(examples, rollout).scores
        return {"reward": sum(scores) / len(scores), "full_marks": sum(s >= 1.0 for s in scores) / len(scores)}


def _mean(column: list) -> float | None:
    values = [v for v in column if v is not None]
    return sum(values) / len(values) if values else None


if __name__ == "__main__":  # `python -m align.grpo_trainer ...`
    import sys

    from prefloop.cli import run_main

    raise SystemExit(run_main(main, sys.argv[1:], "align grpo"))
