"""Configuration of `align round`: one turn of the loop, from a YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field

from loop.launch import TRAINERS
from prefloop.fields import store_field

ALGORITHMS = ("dpo", "online-dpo", "ppo")  # the `align` commands
# YAML section -> the config class whose fields it holds (the align section: per algorithm)
SECTIONS = {"simulate": "labeling.simulate:SimulateConfig", "reward_model": TRAINERS["reward_model"].config,
            "evaluate": "align.evaluation.eval_config:EvalConfig", "launch": "loop.launch:LaunchConfig"}
ALIGN_CONFIGS = {algorithm: TRAINERS[algorithm].config for algorithm in ALGORITHMS}


def _config_class(target: str):
    from prefloop.cli import load_entry

    return load_entry(target)


JUDGES = ("simulated", "people")


@dataclass
class RoundConfig:
    """Run one round of the loop: generate, build tasks, collect judgments, export, train the reward model,
    align, evaluate, and register the new policy (lineage in the store)."""

    project: str = field(metadata={"help": "labeling project the round works in (labeling init)"})
    store: str | None = store_field()
    output_dir: str = field(default="runs/loop", metadata={"help": "round-N/ (export, reward model, policy, eval) go here"})
    reference: str | None = field(default=None, metadata={
        "help": "reference policy π_ref: round 1's policy and every evaluation's baseline (default: embedded)"})
    prompts: str | None = field(default=None, metadata={
        "help": "prompt file imported into the project first (re-importing adds nothing twice); in a YAML, "
                "relative to the YAML file", "path": True})
    eval_prompts: str | None = field(default=None, metadata={
        "help": "held-out prompt file for the evaluation (in a YAML: relative to it)", "path": True})
    gold: str | None = field(default=None, metadata={
        "help": "gold reward r* (rule or module:function): the simulated annotators' and the evaluation's"})
    # 1. generation and tasks
    num_generations: int = field(default=2, metadata={"help": "candidates per prompt from each model", "range": ">= 1",
                                                      "short": "-n", "aliases": ("n",)})
    max_new_tokens: int = field(default=64, metadata={"help": "candidate length cap", "range": ">= 1"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the candidates", "range": "> 0"})
    pairs_per_prompt: int = field(default=1, metadata={"help": "comparison tasks per prompt", "range": ">= 1"})
    # 2. judgments
    judges: str = field(default="simulated", metadata={
        "help": "simulated: annotators of `simulate` act over HTTP; people: wait until the round's tasks are done",
        "choices": list(JUDGES)})
    url: str | None = field(default=None, metadata={
        "help": "a running `labeling serve` to label through (default: one started in this process)"})
    simulate: dict = field(default_factory=dict, metadata={
        "help": "YAML only: fields of `labeling simulate` (annotators, kind, temperature, reliability, ...)"})
    poll_seconds: float = field(default=30.0, metadata={"help": "people: seconds between progress checks",
                                                        "range": "> 0"})
    # 3. training
    test_fraction: float = field(default=0.2, metadata={
        "help": "share of prompts the export holds out (pairs.test.jsonl): the trainers' evaluation data",
        "range": "[0, 1)"})
    reward_model: dict = field(default_factory=dict, metadata={
        "help": "YAML only: fields of `reward-model train` (data and output_dir are set by the round)"})
    algorithm: str = field(default="dpo", metadata={"help": "how the policy is aligned", "choices": list(ALGORITHMS)})
    align: dict = field(default_factory=dict, metadata={
        "help": "YAML only: fields of `align dpo`, `align online-dpo` or `align ppo` (model, data or prompts, "
                "reward_model and output_dir are set by the round)"})
    launch: dict = field(default_factory=dict, metadata={
        "help": "YAML only: run the reward-model and align trainers through `accelerate launch` (config_file: "
                "an accelerate config from configs/, num_processes, optional main_process_port); empty: in this "
                "process"})
    # 4. evaluation
    evaluate: dict = field(default_factory=dict, metadata={
        "help": "YAML only: fields of `align eval` (policies, reference, prompts, reward_model, gold are set)"})
    seed: int = field(default=0, metadata={
        "help": "seed of the round: generation, tasks and who judges them (plus the round number), the annotators' "
                "noise, the split, and the trainers' and evaluation's seeds unless their sections set one",
        "range": "seed"})

    def __post_init__(self):
        import dataclasses

        from prefloop.config import check_ranges, rename_aliases

        if self.judges == "simulated" and not self.simulate.get("annotators"):
            raise ValueError("simulate.annotators: name the simulated annotators' accounts")
        if self.judges == "simulated" and self.simulate.get("kind", "gold") == "gold" and not (
                self.gold or self.simulate.get("gold")):
            raise ValueError("gold: simulated gold annotators need a gold reward")
        if self.eval_prompts is None:
            raise ValueError("eval_prompts: the evaluation needs held-out prompts")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={self.algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
        for section, target in {**SECTIONS, "align": ALIGN_CONFIGS[self.algorithm]}.items():
            cls = _config_class(target)
            setattr(self, section, rename_aliases(cls, getattr(self, section), section))  # old names: a notice
            unknown = sorted(set(getattr(self, section)) - {f.name for f in dataclasses.fields(cls)})
            if unknown:  # found now, not after an hour of generation and judging
                raise ValueError(f"{section}: unknown field(s) {', '.join(unknown)} for {target.split(':')[1]}")
        check_ranges(self)
