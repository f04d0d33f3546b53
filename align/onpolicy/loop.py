"""The on-policy loop, written once: PPO, online DPO, GRPO and RLOO supply only their mathematics.

    trainer = OnPolicyTrainer(cfg, GRPO(cfg))       # 0. run directory, data, reward (probed), models, engine
    for step in range(start, cfg.max_steps):       #    start: 0, or the last checkpoint's step (--resume)
        engine.set_learning_rate(step)              #    warmup, then constant or linear decay
        tasks = schedule.batch(step)                #    this process's prompts: a function of the step
        rollout = sample(tasks, step)               # 1. G answers per prompt, each shard seeded by its place
        scored = algorithm.score(...)               # 2. r(x, y): one finite number per answer, or one line
        batch = algorithm.advantages(scored)        # 3-5. old passes, rewards, advantages (the algorithm's)
        update = algorithm.update(batch)            # 6. losses -> engine.step (the engine reduces gradients)
        log(step + 1, metrics)                      # 7. one vocabulary (METRICS) for every algorithm
        evaluate / checkpoint                       #    held-out every eval_steps and at the end; a
                                                    #    checkpoint every save_steps and at the last step
    save_final(...)                                 #    OUT/final, results into run.json

An algorithm is a subclass of `Algorithm` (below): `advantages(scored)` and `update(batch)` are its
mathematics; the other hooks have defaults (a reward model as r(x, y), pi_theta alone as the prepared
module, one sampled answer per held-out prompt as the evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from align.onpolicy import toolkit
from align.onpolicy.rollout import PolicyModule, Rollout, concat

# What every on-policy trainer logs at every step, named as TRL names them (None where an algorithm does not
# measure it: online DPO has no clipping; GRPO with beta = 0 has no reference to measure a KL against).
METRICS = ("reward", "reward_std", "kl", "entropy", "loss", "grad_norm", "clip_ratio", "learning_rate",
           "completions/mean_length", "completions/clipped_ratio")
PHASES = ("rollout", "score", "advantages", "update")  # logged as time/<phase>, seconds
PLOTS = (("reward.png", ("reward",), "reward r(x, y)", None),
         ("kl.png", ("kl",), "KL(pi || pi_ref), nats per response", "completions/mean_length"))


@dataclass
class Scored:
    """One step's scored rollout on this process: what every algorithm starts from."""

    step: int
    tasks: list  # the P prompts (GRPO: RFT examples with their references)
    rollout: Rollout  # P * G rows, prompt-major: scores.view(P, G) groups each prompt's answers
    scores: torch.Tensor  # (P * G,) r(x, y), float32 on the device
    components: dict = field(default_factory=dict)  # name -> per-answer column (a grader mix's parts)
    reasons: list | None = None  # per answer, why it scored so (graders)


class Algorithm:
    """The mathematics of one on-policy method; the loop calls these hooks. Set by the loop before the first
    step: `self.engine` (align.onpolicy.engine.Engine) and `self.pair` (align.onpolicy.toolkit.PolicyPair)."""

    command = "align ?"
    plots = PLOTS
    num_generations = 1  # answers G sampled per prompt
    summed_metrics: tuple[str, ...] = ()  # counts logged as totals over processes, not means

    def __init__(self, cfg):
        self.cfg = cfg
        self.engine = self.pair = self.reward_fn = None

    # -- data and reward (defaults: prompts and a reward model r(x, y)) ----------------------------------

    def load_tasks(self) -> tuple[list, list, dict]:
        """(training tasks, held-out tasks, source for run.json)."""
        return toolkit.load_prompts(self.cfg, getattr(self.cfg, "eval_prompts", None))

    def prompt(self, task):
        return task

    def load_reward(self, probe_task, device) -> None:
        """Load r(x, y) and score one empty answer: a broken reward fails before any model loads."""
        self.reward_fn = toolkit.load_reward(self.cfg.reward_model, self.prompt(probe_task), device)

    def score(self, step: int, tasks: list, rollout: Rollout) -> Scored:
        G = len(rollout) // len(tasks)
        repeated = [self.prompt(t) for t in tasks for _ in range(G)]
        scores = toolkit.score(self.reward_fn, self.cfg.reward_model, repeated, rollout.texts)
        return Scored(step, tasks, rollout, scores.to(self.engine.acc.device))

    # -- models -----------------------------------------------------------------------------------

    @property
    def needs_reference(self) -> bool:
        return True

    def module(self, pair, device) -> torch.nn.Module:
        """What accelerate prepares: pi_theta (PPO: with its critic)."""
        return PolicyModule(pair.policy)

    def checkpoint_state(self) -> list:
        """Objects with state_dict/load_state_dict saved in every checkpoint (PPO: its KL controller)."""
        return []

    # -- the mathematics ----------------------------------------------------------------------------

    def advantages(self, scored: Scored):
        raise NotImplementedError

    def update(self, batch) -> dict:
        """The optimizer steps on one batch (through self.engine); -> metrics: loss, grad_norm, kl, ..."""
        raise NotImplementedError

    # -- reporting -----------------------------------------------------------------------------------

    def samples(self, scored: Scored) -> list[dict]:
        from align.prompts import as_conversation

        G = len(scored.rollout) // len(scored.tasks)
        reasons = scored.reasons or [None] * len(scored.rollout)
        return [{"prompt": as_conversation(self.prompt(t)), "response": text, "score": r,
                 **({"why": why} if why is not None else {})}
                for t, text, r, why in zip([t for t in scored.tasks for _ in range(G)], scored.rollout.texts,
                                           scored.scores.tolist(), reasons)]

    @torch.no_grad()
    def evaluate(self, tasks: list) -> dict:
        """Held-out: the mean reward of one answer per task, sampled with the same noise every time."""
        rollout = sample(self, tasks, 1, seed=self.cfg.seed + 10_000)
        return {"reward": self.score(-1, tasks, rollout).scores.mean().item()}

    def record(self) -> dict:
        """What run.json records at the start, beside the model's lineage and the data (GRPO: its graders)."""
        return {}

    def results(self) -> dict:
        """What run.json records at the end, beside the held-out evaluation."""
        return {}

    def save(self, run) -> None:
        """Anything besides the policy that the run keeps (PPO: its critic). Main process only."""

    def describe(self) -> str:
        return ""


def sample(algorithm: Algorithm, tasks: list, num_generations: int, *, seed: int, reference: bool = False) -> Rollout:
    cfg = algorithm.cfg
    with algorithm.engine.acc.autocast():
        return algorithm.pair.sample([algorithm.prompt(t) for t in tasks], num_generations, cfg.max_new_tokens,
                                     cfg.temperature, max_prompt_length=cfg.max_prompt_length, seed=seed,
                                     reference=reference)


class OnPolicyTrainer:
    """The loop every on-policy algorithm runs in (see the module head)."""

    def __init__(self, cfg, algorithm: Algorithm):
        from align.onpolicy.engine import Engine
        from prefloop.run import lineage

        self.cfg, self.algo = cfg, algorithm
        # The data first: a refused row or a bad prompt file fails before the run directory is written
        # (rows name only registered graders: align/onpolicy/rft_data.py), and a bad reward before any model loads.
        self.tasks, self.held_out, source = algorithm.load_tasks()
        self.run, self.acc = toolkit.start(cfg, algorithm.command)
        algorithm.load_reward(self.tasks[0], self.acc.device)
        self.pair = toolkit.load_policy_pair(cfg, self.acc.device,
                                              [algorithm.prompt(t) for t in self.tasks + self.held_out],
                                              need_reference=algorithm.needs_reference)
        self.engine = Engine(cfg, self.acc, algorithm.module(self.pair, self.acc.device))
        self.pair.root = self.engine.model  # pi_theta's passes go through the prepared module
        self.pair.ref_model = self.engine.prepare_reference(self.pair.ref_model)
        algorithm.engine, algorithm.pair = self.engine, self.pair
        self.acc.register_for_checkpointing(*algorithm.checkpoint_state())
        self.schedule = toolkit.PromptSchedule(self.tasks, cfg.batch_size, cfg.seed, self.acc.num_processes,
                                                self.acc.process_index)
        self.run.save(**lineage(cfg.model), prompts=source, reward_model=cfg.reward_model or None,
                      num_processes=self.acc.num_processes, **algorithm.record())
        if self.run.main:
            print(f"[prefloop] {algorithm.command}: {len(self.tasks)} prompts, {len(self.held_out)} held out, "
                  f"{algorithm.describe()}{'LoRA' if cfg.lora else 'full fine-tuning'}, "
                  f"{self.acc.num_processes} process(es)")

    def train(self) -> Path:
        """Steps are numbered from 1 (step N = N updates done); returns OUT/final."""
        from tqdm.auto import trange

        from align.onpolicy.reporting import log_samples

        cfg, run = self.cfg, self.run
        start = toolkit.load_checkpoint(self.acc, run)
        logger = run.metrics_logger()
        before = run.record.get("eval_before", {})
        after = run.record.get("eval_after", {}) if start >= cfg.max_steps else {}  # resumed after the end
        if self.held_out and start == 0:
            before = self.algo.evaluate(self.held_out)
            logger.log(0, {f"eval/{k}": v for k, v in before.items()})
            run.save(eval_before=before)
        bar = trange(start, cfg.max_steps, desc=self.algo.command.split()[-1], initial=start, total=cfg.max_steps,
                     disable=not run.main, dynamic_ncols=True)
        for step in bar:
            stats, scored = self.step(step)
            logger.log(step + 1, stats)
            bar.set_postfix(reward=f"{stats['reward']:.3f}", len=f"{stats['completions/mean_length']:.1f}")
            if run.main and cfg.sample_every and step % cfg.sample_every == 0:
                log_samples(step + 1, self.algo.samples(scored)[: cfg.num_samples], logger, bar,
                            run.dir / "samples.jsonl")
            last = step + 1 == cfg.max_steps
            if self.held_out and (last or (cfg.eval_steps and (step + 1) % cfg.eval_steps == 0)):
                after = self.algo.evaluate(self.held_out)
                logger.log(step + 1, {f"eval/{k}": v for k, v in after.items()})
            if last or (step + 1) % cfg.save_steps == 0:
                logger.flush()
                toolkit.save_checkpoint(self.acc, run, step + 1, cfg.save_total_limit)
        logger.close()
        return self.save({"eval_before": before, "eval_after": after} if self.held_out else {})

    def step(self, step: int) -> tuple[dict, Scored]:
        """One iteration on this process's share of the step's global batch. -> (metrics, scored rollout)."""
        from align.onpolicy.reporting import StepTimer
        from prefloop.distributed import mean_over_processes

        algo, timer = self.algo, StepTimer(self.acc.device)
        lr = self.engine.set_learning_rate(step)
        tasks = self.schedule.batch(step)
        with timer("rollout"):  # 1. G answers per prompt at temperature T
            rollout = self.sample(tasks, step)
        with timer("score"):  # 2. r(x, y), checked
            scored = algo.score(step, tasks, rollout)
        with timer("advantages"):  # 3-5. the algorithm's passes without gradients, rewards and advantages
            batch = algo.advantages(scored)
        with timer("update"):  # 6. its losses, through the engine
            update = algo.update(batch)
        scores = self.engine.gather(scored.scores)  # (N * P * G,) the global batch's rewards: the same everywhere
        lengths = rollout.response_lengths.float()
        stats = {**dict.fromkeys(METRICS), "reward": scores.mean(), "reward_std": scores.std() if len(scores) > 1 else 0.0,
                 "completions/mean_length": lengths.mean(),
                 "completions/clipped_ratio": 1.0 - rollout.terminated.float().mean(),
                 **{f"grader/{name}": _mean(column) for name, column in scored.components.items()}, **update}
        stats = mean_over_processes(stats, sums=algo.summed_metrics)
        stats.update(learning_rate=lr, **timer.totals())
        return stats, scored

    def sample(self, tasks: list, step: int) -> Rollout:
        """G answers to each task, in cfg.sampling_shards shards, each seeded by its place in the global batch."""
        shards = self.cfg.sampling_shards
        per = len(tasks) // shards
        first = self.acc.process_index * shards
        parts = [sample(self.algo, tasks[s * per:(s + 1) * per], self.algo.num_generations,
                        seed=toolkit.shard_seed(self.cfg.seed, step, first + s)) for s in range(shards)]
        return parts[0] if shards == 1 else concat(*parts)

    def save(self, results: dict) -> Path:
        """OUT/final as a plain transformers model (LoRA merged, or kept as an adapter), plots, results.
        Every process calls it (save_final checks that their policies agree); the main one writes."""
        from align.onpolicy.reporting import save_plots
        from align.train_common import save_final

        self.acc.wait_for_everyone()
        with self.engine.gathered():
            if self.run.main:
                self.algo.save(self.run)
            out = save_final(self.engine.unwrapped.policy, self.pair.tokenizer, self.cfg, self.run,
                             {**results, **self.algo.results()})
        if self.run.main:
            save_plots(self.run.metrics_path, self.run.dir, self.algo.plots)
        self.acc.wait_for_everyone()
        return out


def _mean(column: list) -> float | None:
    values = [v for v in column if v is not None]
    return sum(values) / len(values) if values else None
