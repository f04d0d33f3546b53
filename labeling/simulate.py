"""Simulated and AI annotators: scripts that label through the app's authenticated HTTP API.

    labeling simulate --url http://127.0.0.1:7860/ --project chat --annotators sim-1 sim-2 sim-3 \\
        --gold positive_words --temperature 0.5 --reliability 1.0 0.9 0.6 --position-bias 0.3
    labeling simulate --url ... --project chat --annotators judge-1 --kind ai --constitution rules.md

They never write to the database: each signs in with its own account (create them first,
`labeling users add`) and calls /next_task and /submit like a person's browser does, so their
work shows up in the dashboard, agreement statistics and exports like anyone's.

A gold annotator judges by a known reward r* (`prefloop.gold`): with probability
`reliability` it follows the noisy gold model, otherwise it answers uniformly at random.
The noisy gold model is a Bradley-Terry / Plackett-Luce choice with temperature T and a
position bias b (a logit added to the response shown first):

    P(A ≻ B) = σ((r*_A − r*_B) / T + b)        ranking: order by r*_i / T + b·[i = A] + Gumbel noise

(Gumbel-max sampling is exactly Plackett-Luce, and its pairwise marginal is the line above.)
|r*_A − r*_B| < tie_threshold is judged a tie; a winner by at least `much_better` is "much better".
An AI annotator asks a language-model judge (`labeling.judge`) instead of r*.

Repeatable: a gold annotator's answer is a function of (its seed, the task): its noise is drawn from a
generator seeded by the task's conversation and responses, in an order of the responses' own (by text),
so neither the order tasks arrive in nor the order the server shows the responses in (with no position
bias) changes it. Who judges which task is a race between the annotators' threads; `run_annotators`
with `judges_per_task` fixes it by the seed instead: each task has its judges, drawn in advance, and
another annotator that is served it gives it back (a skip), so two runs of one seed store the same votes.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol


@dataclass(frozen=True)
class Behaviour:
    """How one simulated annotator turns gold rewards into a judgment."""

    temperature: float = 1.0  # T: Bradley-Terry noise; 0 = always the gold winner
    reliability: float = 1.0  # share of tasks judged by the gold model, the rest at random
    position_bias: float = 0.0  # b: logit added to the response shown first (A)
    tie_threshold: float = 0.0  # |r*_A - r*_B| below this is a tie (pairwise projects); 0 = never
    much_better: float = math.inf  # a winner by at least this margin of r* is "much better"

    def __post_init__(self):
        if self.temperature < 0 or not 0 <= self.reliability <= 1 or self.tie_threshold < 0:
            raise ValueError(f"{self}: need temperature >= 0, reliability in [0, 1], tie_threshold >= 0")


def gold_order(scores: list[float], behaviour: Behaviour, rng: random.Random,
               draw_order: list[int] | None = None) -> list[int]:
    """Shown positions best first (position 0 = A), sampled from the noisy gold model. `draw_order`: the
    positions in the order the noise is drawn for them (default: as shown; see the module head)."""
    draw = list(draw_order) if draw_order is not None else list(range(len(scores)))
    if rng.random() >= behaviour.reliability:
        rng.shuffle(draw)
        return draw
    T, b = behaviour.temperature, behaviour.position_bias
    if T == 0:  # deterministic: the bias only breaks exact ties in favour of A
        keys = {i: scores[i] + (1e-9 * math.copysign(1, b) if i == 0 and b else 0.0) for i in draw}
    else:
        keys = {i: scores[i] / T + (b if i == 0 else 0.0) - math.log(-math.log(rng.random() or 1e-300))
                for i in draw}  # + Gumbel(0, 1)
    return sorted(draw, key=lambda i: -keys[i])


def pairwise_choice(scores: list[float], behaviour: Behaviour, rng: random.Random,
                    draw_order: list[int] | None = None) -> str:
    """a_better | a_much_better | tie | b_better | b_much_better for scores (r*_A, r*_B)."""
    margin = abs(scores[0] - scores[1])
    if margin < behaviour.tie_threshold and rng.random() < behaviour.reliability:
        return "tie"
    winner = "ab"[gold_order(scores, behaviour, rng, draw_order)[0]]
    return f"{winner}_{'much_better' if margin >= behaviour.much_better else 'better'}"


def task_key(task: dict) -> str:
    """What identifies a served task to an annotator whatever the assignment: its conversation and its
    responses as a set (the shown order and the assignment's ids vary from one serving to the next)."""
    return json.dumps([task["conversation"], sorted(r["text"] for r in task["responses"])], sort_keys=True)


def task_rng(seed: int | str, task: dict) -> random.Random:
    """A generator of its own for (seed, task): the same draws whenever and in whatever order it comes."""
    return random.Random(hashlib.sha256(f"{seed}:{task_key(task)}".encode()).digest())


REQUEST_TIMEOUT_S = 60.0


class Policy(Protocol):
    def __call__(self, task: dict) -> dict: ...  # a public task -> /submit's answer fields


@dataclass
class GoldAnnotator:
    """Judges a task by the gold reward of each shown response, with `behaviour`'s noise."""

    gold: Callable
    behaviour: Behaviour = field(default_factory=Behaviour)
    seed: int = 0

    def __call__(self, task: dict) -> dict:
        texts = [r["text"] for r in task["responses"]]
        scores = [float(s) for s in self.gold([task["conversation"]] * len(texts), texts)]
        rationale = "simulated: gold " + ", ".join(f"{r['label']}={s:.3g}" for r, s in zip(task["responses"], scores))
        rng, by_text = task_rng(self.seed, task), sorted(range(len(texts)), key=lambda i: texts[i])
        if len(texts) == 2:
            return {"choice": pairwise_choice(scores, self.behaviour, rng, by_text), "rationale": rationale}
        labels = [task["responses"][i]["label"] for i in gold_order(scores, self.behaviour, rng, by_text)]
        return {"ranking": labels, "rationale": rationale}


class FixedJudges:
    """Who judges what, fixed by a seed instead of by the race: each task's `per_task` judges among the `n`
    annotators are drawn from (seed, task). An annotator served a task that is not its own gives it back
    (a skip, which the server never serves it again), and none stops while another holds a task that may
    come back to it: an annotator stops on "no task left" only if nobody was mid-call and nothing was
    given back since it asked."""

    def __init__(self, seed: int, n: int, per_task: int):
        self.seed, self.n, self.per_task = seed, n, max(1, min(per_task, n))
        self._lock = threading.Lock()
        self._busy = 0  # annotators between asking for a task and answering or returning it
        self._returned = 0  # tasks given back so far

    def judges(self, task: dict) -> set[int]:
        return set(task_rng(f"judges:{self.seed}", task).sample(range(self.n), self.per_task))

    @property
    def returned(self) -> int:
        return self._returned

    def enter(self) -> None:
        with self._lock:
            self._busy += 1

    def leave(self, gave_back: bool) -> None:
        with self._lock:  # one step: a waiting annotator sees either the call running or the task back
            self._returned += gave_back
            self._busy -= 1

    def may_stop(self, returned_before: int) -> bool:
        with self._lock:
            return self._busy == 0 and self._returned == returned_before


NOT_MINE = "simulated: another annotator judges this task (who judges what is fixed by the seed)"


def annotate(url: str, project: str, name: str, password: str, policy: Policy,
             max_tasks: int | None = None, stop: threading.Event | None = None,
             fixed: tuple[FixedJudges, int] | None = None) -> int:
    """Sign in as `name`, then take and answer tasks until none is left (or `max_tasks`); with `fixed`
    (the judges and this annotator's index), only its own tasks. -> judgments made."""
    import httpx

    from labeling.client import LabelingClient
    from prefloop.errors import InputError

    try:  # the JSON API (labeling.app.rest): one short request per call, ~50x less client CPU than gradio_client
        client = LabelingClient(url, name, password, timeout=REQUEST_TIMEOUT_S)
    except (httpx.ConnectError, httpx.ConnectTimeout) as err:
        raise InputError(f"{url}: cannot reach the labeling server ({err}); is `labeling serve` running?") from None
    done = 0
    with client:
        while (max_tasks is None or done < max_tasks) and not (stop and stop.is_set()):
            returned_before = fixed[0].returned if fixed else 0
            task, gave_back = None, False
            if fixed:
                fixed[0].enter()
            try:
                task = _call(client.next_task, project)["task"]
                if task is not None and fixed and fixed[1] not in fixed[0].judges(task):
                    client.skip(task["assignment_id"], NOT_MINE)  # not retried: a second skip is refused
                    gave_back = True
                elif task is not None:
                    _answer(client, task, policy)
                    done += 1
            finally:
                if fixed:
                    fixed[0].leave(gave_back)
            if task is None:
                if not fixed or fixed[0].may_stop(returned_before):
                    break
                time.sleep(0.05)  # another annotator may still give a task of ours back
    return done


def _answer(client, task: dict, policy: Policy) -> None:
    start = time.perf_counter()
    answer = policy(task)
    ms = int(1000 * (time.perf_counter() - start))
    fields = {k: answer[k] for k in ("choice", "ranking", "rationale") if answer.get(k) is not None}
    _call(client.submit, task["assignment_id"], task["client_request_id"], ms_spent=ms, **fields)


def _call(method, *args, attempts: int = 3, **kwargs):
    """A client call, retried on a timeout: both calls are safe to repeat (/next_task gives back the
    task already held, /submit with the same client_request_id returns the first answer)."""
    import httpx

    for attempt in range(attempts):
        try:
            return method(*args, **kwargs)
        except httpx.TimeoutException:
            if attempt == attempts - 1:
                raise
            time.sleep(2 ** attempt)


def run_annotators(url: str, project: str, annotators: list[tuple[str, str, Policy]],
                   max_tasks: int | None = None, fixed_seed: int | None = None,
                   judges_per_task: int = 1) -> dict[str, int]:
    """Every annotator in its own thread, as people working at once; -> judgments per name.

    With `fixed_seed`, who judges which task is drawn from the seed (`judges_per_task` of the annotators,
    the project's overlap) instead of decided by the race: two runs store the same votes.
    An error in one annotator stops the others and is raised here.
    """
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()
    fixed = None if fixed_seed is None else FixedJudges(fixed_seed, len(annotators), judges_per_task)

    def work(i, name, password, policy):
        try:
            return annotate(url, project, name, password, policy, max_tasks, stop, fixed and (fixed, i))
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, len(annotators))) as pool:
        futures = {name: pool.submit(work, i, name, password, policy)
                   for i, (name, password, policy) in enumerate(annotators)}
        return {name: future.result() for name, future in futures.items()}


PER_ANNOTATOR = ("temperature", "reliability", "position_bias", "tie_threshold")


@dataclass
class SimulateConfig:
    """Label a project through the app's HTTP API with simulated (gold) or AI (language-model judge) annotators."""

    url: str = field(metadata={"help": "address of a running `labeling serve`, e.g. http://127.0.0.1:7860/"})
    project: str = field(metadata={"help": "project to label"})
    annotators: list[str] = field(metadata={"help": "account names, one simulated annotator each (labeling users add)"})
    password_env: str = field(default="PREFLOOP_SIM_PASSWORD", metadata={
        "help": "environment variable holding the accounts' password (never a flag: flags show in `ps`)"})
    kind: str = field(default="gold", metadata={
        "help": "gold: judge by a known reward with noise; ai: a language-model judge with a constitution",
        "choices": ["gold", "ai"]})
    gold: str = field(default="positive_words", metadata={
        "help": "gold reward r*: a rule (positive_words, concise) or module:function (prompts, responses) -> scores"})
    temperature: list[float] = field(default_factory=lambda: [1.0], metadata={
        "help": "T in P(A > B) = sigmoid((r*_A - r*_B) / T + b); one value, or one per annotator; 0 = no noise"})
    reliability: list[float] = field(default_factory=lambda: [1.0], metadata={
        "help": "share of tasks judged by the gold model (the rest at random); one value or one per annotator"})
    position_bias: list[float] = field(default_factory=lambda: [0.0], metadata={
        "help": "b: logit added to the response shown first; one value or one per annotator"})
    tie_threshold: list[float] = field(default_factory=lambda: [0.0], metadata={
        "help": "|r*_A - r*_B| below this is a tie; one value or one per annotator"})
    much_better: float = field(default=math.inf, metadata={"help": "a gold margin from which the winner is 'much better'"})
    judge_model: str | None = field(default=None, metadata={"help": "ai: the judge's causal LM (default: the embedded model)"})
    constitution: str | None = field(default=None, metadata={"help": "ai: a text file with the constitution (default: built in)"})
    max_tasks: int | None = field(default=None, metadata={"help": "stop each annotator after this many judgments"})
    seed: int = field(default=0, metadata={"help": "seed of the simulated noise (annotator i uses seed + i)"})

    def __post_init__(self):
        if not self.annotators:
            raise ValueError("annotators: name at least one account")
        for name in PER_ANNOTATOR:
            values = getattr(self, name)
            if len(values) not in (1, len(self.annotators)):
                raise ValueError(f"{name}: give one value or one per annotator ({len(self.annotators)}), "
                                 f"not {len(values)}")
        self.behaviours()  # validates the values themselves

    def behaviours(self) -> list[Behaviour]:
        def value(name, i):
            values = getattr(self, name)
            return values[i if len(values) > 1 else 0]

        return [Behaviour(**{n: value(n, i) for n in PER_ANNOTATOR}, much_better=self.much_better)
                for i in range(len(self.annotators))]


def policies(cfg: SimulateConfig) -> list[Policy]:
    """One policy per annotator: gold annotators with their own noise and seed, or AI annotators
    sharing one judge model (loaded once)."""
    if cfg.kind == "ai":
        from pathlib import Path

        from labeling.judge import AIAnnotator, ConstitutionJudge

        constitution = Path(cfg.constitution).read_text() if cfg.constitution else None
        judge = ConstitutionJudge.load(cfg.judge_model, constitution)
        return [AIAnnotator(judge) for _ in cfg.annotators]
    from prefloop.gold import load_gold

    gold = load_gold(cfg.gold)
    return [GoldAnnotator(gold, b, cfg.seed + i) for i, b in enumerate(cfg.behaviours())]


def main(argv: list[str] | None = None) -> int:
    import os

    from prefloop.config import parse_config
    from prefloop.errors import InputError

    cfg = parse_config(SimulateConfig, argv, prog="labeling simulate")
    password = os.environ.get(cfg.password_env)
    if not password:
        raise InputError(f"${cfg.password_env} is not set: it holds the simulated annotators' password")
    start = time.perf_counter()
    done = run_annotators(cfg.url, cfg.project, [(n, password, p) for n, p in zip(cfg.annotators, policies(cfg))],
                          cfg.max_tasks)
    for name, n in done.items():
        print(f"{name}: {n} judgments")
    print(f"{sum(done.values())} judgments in {time.perf_counter() - start:.1f} s")
    return 0


def p_gold_winner(delta: float, behaviour: Behaviour) -> float:
    """P(a pairwise judgment names the response with the higher r*), for r* margin `delta`, averaged over
    which side (A or B) shows it. No reward model can agree with these labels more often than this on
    average: predicting the gold winner is the Bayes decision, so its mean over pairs is the ceiling on a
    reward model's held-out accuracy. A tie (equal r*, or under tie_threshold) counts as a coin flip."""
    margin, b = abs(delta), behaviour
    if margin == 0 or margin < b.tie_threshold:
        p = 0.5
    elif b.temperature == 0:
        p = 1.0
    else:
        sigmoid = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
        p = 0.5 * (sigmoid(margin / b.temperature + b.position_bias) + sigmoid(margin / b.temperature - b.position_bias))
    return b.reliability * p + (1.0 - b.reliability) * 0.5
