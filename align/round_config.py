"""Configuration of `align round`: one turn of the loop, from a YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field

ALGORITHMS = ("dpo", "online_dpo", "ppo")
JUDGES = ("simulated", "people")


@dataclass
class RoundConfig:
    """Run one round of the loop: generate, build tasks, collect judgments, export, train the reward model,
    align, evaluate, and register the new policy (lineage in the store)."""

    project: str = field(metadata={"help": "labeling project the round works in (labeling init)"})
    db: str | None = field(default=None, metadata={"help": "SQLAlchemy URL or SQLite path ($PREFLOOP_DB, ./prefloop.db)"})
    output_dir: str = field(default="runs/loop", metadata={"help": "round-N/ (export, reward model, policy, eval) go here"})
    reference: str | None = field(default=None, metadata={
        "help": "reference policy π_ref: round 1's policy and every evaluation's baseline (default: embedded)"})
    prompts: str | None = field(default=None, metadata={
        "help": "prompt file imported into the project first (re-importing adds nothing twice)"})
    eval_prompts: str | None = field(default=None, metadata={"help": "held-out prompt file for the evaluation"})
    gold: str | None = field(default=None, metadata={
        "help": "gold reward r* (rule or module:function): the simulated annotators' and the evaluation's"})
    # 1. generation and tasks
    n: int = field(default=2, metadata={"help": "candidates per prompt from each model"})
    max_new_tokens: int = field(default=64, metadata={"help": "candidate length cap"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the candidates"})
    pairs_per_prompt: int = field(default=1, metadata={"help": "comparison tasks per prompt"})
    # 2. judgments
    judges: str = field(default="simulated", metadata={
        "help": "simulated: annotators of `simulate` act over HTTP; people: wait until the round's tasks are done",
        "choices": list(JUDGES)})
    url: str | None = field(default=None, metadata={
        "help": "a running `labeling serve` to label through (default: one started in this process)"})
    simulate: dict = field(default_factory=dict, metadata={
        "help": "YAML only: fields of `labeling simulate` (annotators, kind, temperature, reliability, ...)"})
    poll_seconds: float = field(default=30.0, metadata={"help": "people: seconds between progress checks"})
    # 3. training
    reward_model: dict = field(default_factory=dict, metadata={
        "help": "YAML only: fields of `reward-model train` (data and output_dir are set by the round)"})
    algorithm: str = field(default="dpo", metadata={"help": "how the policy is aligned", "choices": list(ALGORITHMS)})
    align: dict = field(default_factory=dict, metadata={
        "help": "YAML only: fields of `align dpo` / `align ppo` (model, data, reward and output_dir are set)"})
    # 4. evaluation
    evaluate: dict = field(default_factory=dict, metadata={
        "help": "YAML only: fields of `align eval` (policies, reference, prompts, reward_model, gold are set)"})
    seed: int = field(default=0, metadata={"help": "seed of generation and task building (plus the round number)"})

    def __post_init__(self):
        if self.judges == "simulated" and not self.simulate.get("annotators"):
            raise ValueError("simulate.annotators: name the simulated annotators' accounts")
        if self.judges == "simulated" and self.simulate.get("kind", "gold") == "gold" and not (
                self.gold or self.simulate.get("gold")):
            raise ValueError("gold: simulated gold annotators need a gold reward")
        if self.eval_prompts is None:
            raise ValueError("eval_prompts: the evaluation needs held-out prompts")
        if self.n < 1 or self.pairs_per_prompt < 1 or self.max_new_tokens < 1:
            raise ValueError("n, pairs_per_prompt and max_new_tokens must be >= 1")
