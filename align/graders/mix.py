"""Weighted mixes of graders, from YAML or a dataset row, with the reward model as one possible component.

    graders:                      # reward = (0.5·math + 0.3·length + 0.2·reward_model) / (0.5 + 0.3 + 0.2)
      - {name: math, weight: 0.5, tolerance: 0.01}
      - {name: length, weight: 0.3, max_words: 200}
      - {name: reward_model, weight: 0.2, path: runs/rm}

A spec is any of: a grader name ("math"), one grader ({name: math, ...}), a list of graders,
or {graders: [...]}. Keys other than `name` and `weight` are the grader's options, checked
against its signature when the spec is read, so a typo fails before a run starts.
Weights are relative: the mix is divided by their sum, so it stays in [0, 1].

`reward_model` scores with a RewardScorer (reward_model/scorer.py; `path` is a `reward-model
train` directory or "module:function"). Its scores are normalised to mean 0, std 1 on a
reference sample, so sigmoid(r / temperature) puts the typical answer at 0.5, in [0, 1] like
the graders.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path

from align.graders import GRADERS, Budget, Grade, GraderSpecError, grade
from align.graders.budget import ISOLATED, LIMIT_OPTIONS, worker_for

REWARD_MODEL = "reward_model"
_REWARD_MODEL_OPTIONS = {"path", "temperature"}


@dataclass(frozen=True)
class GraderSpec:
    name: str
    weight: float = 1.0
    options: dict = field(default_factory=dict)


def parse_grader_spec(spec, where: str = "grader") -> tuple[GraderSpec, ...]:
    """The graders of a spec (see the module head); GraderSpecError names `where` and the entry."""
    if isinstance(spec, tuple) and spec and all(isinstance(s, GraderSpec) for s in spec):
        return spec  # already parsed
    if isinstance(spec, dict) and "graders" in spec:
        if set(spec) != {"graders"}:
            raise GraderSpecError(f"{where}: a mix holds only 'graders', got {sorted(spec)}")
        spec = spec["graders"]
    entries = spec if isinstance(spec, list) else [spec]
    if not entries:
        raise GraderSpecError(f"{where}: no graders")
    specs = tuple(_one(entry, f"{where}[{i}]" if isinstance(spec, list) else where) for i, entry in enumerate(entries))
    if sum(s.weight for s in specs) <= 0:
        raise GraderSpecError(f"{where}: the weights sum to 0")
    return specs


def _one(entry, where: str) -> GraderSpec:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise GraderSpecError(f"{where}: expected a grader name or an object with 'name'")
    options = {k: v for k, v in entry.items() if k not in ("name", "weight")}
    name, weight = entry["name"], entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise GraderSpecError(f"{where}: weight must be a number >= 0, got {weight!r}")
    if name == REWARD_MODEL:
        allowed = _REWARD_MODEL_OPTIONS
        if "path" not in options:
            raise GraderSpecError(f"{where}: reward_model needs 'path' (a reward-model directory or module:function)")
    elif name in GRADERS:
        allowed = set(list(inspect.signature(GRADERS[name]).parameters)[3:])
    else:
        raise GraderSpecError(f"{where}: unknown grader {name!r}; known: {', '.join([*GRADERS, REWARD_MODEL])}")
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise GraderSpecError(f"{where}: {name} has no option(s) {', '.join(unknown)}; it takes {sorted(allowed)}")
    limit = options.get(LIMIT_OPTIONS.get(name, ""), 1.0)  # a time limit: a number > 0 (the budget caps it)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0:
        raise GraderSpecError(f"{where}: {name} option {LIMIT_OPTIONS[name]} must be a number of seconds > 0, "
                              f"got {limit!r}")
    return GraderSpec(name, float(weight), options)


def load_grader_spec(path: str | Path) -> tuple[GraderSpec, ...]:
    """The mix in a YAML file ({graders: [...]}), or a shipped one by name (`graders_example`)."""
    from prefloop.config import load_yaml, resolve_config

    path = resolve_config(path)
    return parse_grader_spec(load_yaml(path), where=str(path))


@dataclass
class MixScores:
    scores: list[float]  # the weighted mix per answer, in [0, 1]
    components: dict[str, list[float | None]]  # per grader (None where a row does not use it): the monitors
    reasons: list[str]  # why each answer lost points, "" for full marks


class GraderMix:
    """Scores a batch of answers, each with its reference and its own spec (or the default one)."""

    def __init__(self, default=None, device=None, budget: Budget | None = None):
        self.default = parse_grader_spec(default, "default grader") if default is not None else None
        self.device, self.budget = device, budget or Budget()
        self._reward_fns: dict[str, object] = {}

    def __call__(self, prompts: list, responses: list[str], references: list,
                 specs: list[tuple[GraderSpec, ...] | None] | None = None) -> MixScores:
        specs = [s or self.default for s in (specs or [None] * len(responses))]
        if any(s is None for s in specs):
            raise GraderSpecError("a row has no grader spec and the mix has no default")
        names = [_component_names(s) for s in specs]
        columns: dict[str, list[float | None]] = {n: [None] * len(responses) for ns in names for n in ns}
        done = {**self._reward_model_scores(prompts, responses, specs),
                **self._isolated_scores(prompts, responses, references, specs)}
        scores, reasons = [], []
        for i, (row_specs, row_names) in enumerate(zip(specs, names)):
            total, why = 0.0, []
            for j, (spec, name) in enumerate(zip(row_specs, row_names)):
                g = done[(i, j)] if (i, j) in done else grade(
                    spec.name, prompts[i], responses[i], references[i], budget=self.budget, **spec.options)
                columns[name][i] = float(g)
                total += spec.weight * float(g)
                if g.why:
                    why.append(f"{name}: {g.why}")
            scores.append(total / sum(s.weight for s in row_specs))
            reasons.append("; ".join(why))
        return MixScores(scores, columns, reasons)

    def _isolated_scores(self, prompts, responses, references, specs) -> dict[tuple[int, int], Grade]:
        """The worker process's graders (python, sql) for the whole batch in one round trip, each under the budget."""
        slots = [(i, j) for i, row_specs in enumerate(specs) for j, spec in enumerate(row_specs) if spec.name in ISOLATED]
        if not slots:
            return {}
        tasks = [(specs[i][j].name, prompts[i], responses[i], references[i], specs[i][j].options) for i, j in slots]
        return dict(zip(slots, worker_for(self.budget).grade_many(tasks)))

    def _reward_model_scores(self, prompts, responses, specs) -> dict[tuple[int, int], Grade]:
        """One batched RewardScorer call per reward model, for every row that uses it."""
        from reward_model.scorer import load_reward

        wanted: dict[str, list[tuple[int, int, float]]] = {}
        for i, row_specs in enumerate(specs):
            for j, spec in enumerate(row_specs):
                if spec.name == REWARD_MODEL:
                    wanted.setdefault(str(spec.options["path"]), []).append(
                        (i, j, float(spec.options.get("temperature", 1.0))))
        out = {}
        for path, slots in wanted.items():
            if path not in self._reward_fns:
                self._reward_fns[path] = load_reward(path, device=self.device)
            raw = self._reward_fns[path]([prompts[i] for i, _, _ in slots], [responses[i] for i, _, _ in slots])
            for (i, j, temperature), r in zip(slots, raw):
                out[(i, j)] = Grade(1.0 / (1.0 + math.exp(-max(min(r / temperature, 50.0), -50.0))))
        return out


def _component_names(specs: tuple[GraderSpec, ...]) -> list[str]:
    """Grader names, numbered when a mix uses one grader twice (length, length_2)."""
    seen: dict[str, int] = {}
    names = []
    for spec in specs:
        seen[spec.name] = seen.get(spec.name, 0) + 1
        names.append(spec.name if seen[spec.name] == 1 else f"{spec.name}_{seen[spec.name]}")
    return names
