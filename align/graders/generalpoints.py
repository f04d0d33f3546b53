"""GeneralPoints (Chu et al. 2025, "SFT Memorizes, RL Generalizes", §4.1): card arithmetic with rule variants.

A task deals `n_cards` cards; the answer is one arithmetic expression that uses every card's
value exactly once, with + - * / and parentheses, and equals the target (24 in the paper).
Rule variants make out-of-distribution tests, as in the paper:
  face rule  "face10": J, Q, K count as 10 (the training rule); "ordinal": J=11, Q=12, K=13
  target     another target than the one trained on
The prompt states the rule, so a model that learnt the rule (not the answers) can follow it.
Difficulty knobs: number of cards, target (or `None`: a reachable target drawn per task), and
the highest rank dealt (`max_rank` 13 deals A..K; smaller keeps numbers small for a tiny model).

The grader (align/graders/cards.py) parses the answer with `ast` (never eval) and allows only integer literals and the
four operations, evaluated exactly with Fractions. Partial credit:
  0.2  the answer is a valid expression
  0.3  times the F1 between the numbers it uses and the card values (1 when exactly the cards)
  0.5  when it uses exactly the cards and reaches the target; with exactly the cards but another
       value, 0.25 * max(0, 1 - |value - target| / target), so nearer is better
This module holds the rules, the solver, the task generator and the safe evaluator; it imports
nothing from align.graders. Each task row carries a worked solution (found by exhaustive search) for SFT.
"""

from __future__ import annotations

import ast
import functools
import random
import re
from dataclasses import dataclass, field
from fractions import Fraction


RULES = {
    "face10": {"J": 10, "Q": 10, "K": 10},
    "ordinal": {"J": 11, "Q": 12, "K": 13},
}
RULE_TEXT = {
    "face10": "J, Q and K each count as 10, and A counts as 1",
    "ordinal": "J counts as 11, Q as 12, K as 13, and A as 1",
}
MAX_EXPRESSION_CHARS = 200
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b}


def card_value(card: str, rule: str) -> int:
    return RULES[rule].get(card) or (1 if card == "A" else int(card))


def card_name(rank: int) -> str:
    return {1: "A", 11: "J", 12: "Q", 13: "K"}.get(rank, str(rank))


# ---------------------------------------------------------------------------
# the solver: exhaustive search over combining two numbers at a time
# ---------------------------------------------------------------------------


def reachable(values: list[int]) -> dict[Fraction, str]:
    """Every value an expression over all of `values` (each once) can take, with one expression for it."""
    return dict(_reachable(tuple(sorted(values))))


@functools.lru_cache(maxsize=4096)  # sub-deals recur across deals: search each multiset once
def _reachable(values: tuple[int, ...]) -> tuple[tuple[Fraction, str], ...]:
    """Split the cards into two non-empty groups every way, combine every value of one with every value of the other."""
    if len(values) == 1:
        return ((Fraction(values[0]), str(values[0])),)
    out: dict[Fraction, str] = {}
    n = len(values)
    for mask in range(1, 2 ** n - 1, 2):  # odd masks: card 0 always on the left, so each split is seen once
        left = tuple(values[i] for i in range(n) if mask >> i & 1)
        right = tuple(values[i] for i in range(n) if not mask >> i & 1)
        for a, ea in _reachable(left):
            ea = f"({ea})" if len(left) > 1 else ea
            for b, eb in _reachable(right):
                eb = f"({eb})" if len(right) > 1 else eb
                out.setdefault(a + b, f"{ea} + {eb}")
                out.setdefault(a * b, f"{ea} * {eb}")
                out.setdefault(a - b, f"{ea} - {eb}")
                out.setdefault(b - a, f"{eb} - {ea}")
                if b:
                    out.setdefault(a / b, f"{ea} / {eb}")
                if a:
                    out.setdefault(b / a, f"{eb} / {ea}")
    return tuple(out.items())


def solve(values: list[int], target: int) -> str | None:
    """An expression over `values` equal to `target`, or None."""
    return reachable(values).get(Fraction(target))


# ---------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------


def make_prompt(cards: list[str], target: int, rule: str) -> str:
    return (f"Cards: {', '.join(cards)}. {RULE_TEXT[rule]}. Use each card's value exactly once, with + - * / "
            f"and parentheses, to make {target}. End with the line: Answer: <expression>")


def worked_solution(cards: list[str], values: list[int], expression: str) -> str:
    """The SFT target: the card values under the rule, then the answer."""
    return f"Values: {', '.join(map(str, values))}.\nAnswer: {expression}"


def generate_tasks(n: int, n_cards: int = 4, target: int | None = 24, max_rank: int = 13, rule: str = "face10",
                   seed: int = 0, max_target: int = 30, require_face: bool = False) -> list[dict]:
    """`n` solvable tasks as RFT rows: prompt, reference, grader, worked solution, rule.

    target None draws each task's target from the positive integers up to `max_target` that
    its cards can reach. Unsolvable deals are redrawn; with `require_face`, so are deals without
    a J, Q or K (the out-of-distribution test of the face rule needs the cards the rule is about).
    """
    if rule not in RULES:
        raise ValueError(f"rule {rule!r} is not one of {', '.join(RULES)}")
    if not 1 <= n_cards <= 5 or not 1 <= max_rank <= 13:
        raise ValueError(f"n_cards must be 1..5 and max_rank 1..13, got {n_cards} and {max_rank}")
    rng = random.Random(seed)
    rows, attempts = [], 0
    while len(rows) < n:
        attempts += 1
        if attempts > 1000 * n:
            raise ValueError(f"cannot find {n} solvable deals of {n_cards} cards for target {target}")
        cards = [card_name(rng.randint(1, max_rank)) for _ in range(n_cards)]
        if require_face and not set(cards) & set(RULES[rule]):
            continue
        values = [card_value(c, rule) for c in cards]
        reach = reachable(values)
        if target is None:
            options = sorted(int(v) for v in reach if v.denominator == 1 and 1 <= v <= max_target)
            if not options:
                continue
            task_target = rng.choice(options)
        else:
            task_target = target
        expression = reach.get(Fraction(task_target))
        if expression is None:
            continue
        rows.append({"prompt": make_prompt(cards, task_target, rule),
                     "reference": {"cards": cards, "values": values, "target": task_target},
                     "grader": "generalpoints", "solution": worked_solution(cards, values, expression),
                     "rule": rule})
    return rows


# ---------------------------------------------------------------------------
# the grader
# ---------------------------------------------------------------------------


class NotAnExpression(ValueError):
    pass


def extract_expression(text: str) -> str:
    """The text after the last "Answer:" (else the last non-empty line), up to any "=", with x/× as *."""
    marker = list(re.finditer(r"answer\s*:", text, flags=re.IGNORECASE))
    tail = text[marker[-1].end():] if marker else next((ln for ln in reversed(text.splitlines()) if ln.strip()), "")
    line = tail.strip().splitlines()[0] if tail.strip() else ""
    line = line.split("=")[0]
    return line.replace("×", "*").replace("÷", "/").replace("x", "*").replace("X", "*").strip().rstrip(".")


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """(exact value, the integers used) of an expression of integers and + - * /; NotAnExpression otherwise."""
    if not expression or len(expression) > MAX_EXPRESSION_CHARS:
        raise NotAnExpression("empty" if not expression else f"longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as err:
        raise NotAnExpression(f"does not parse ({type(err).__name__})") from None
    numbers: list[int] = []

    def walk(node) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise NotAnExpression("divides by zero")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            numbers.append(node.value)
            return Fraction(node.value)
        raise NotAnExpression(f"{type(node).__name__} is not allowed: only integers and + - * /")

    try:
        return walk(tree.body), numbers
    except RecursionError:
        raise NotAnExpression("nested too deeply") from None


# ---------------------------------------------------------------------------
# `align generalpoints`: write a task file
# ---------------------------------------------------------------------------


@dataclass
class GeneralPointsConfig:
    """Write GeneralPoints card-arithmetic tasks as an RFT dataset (and worked solutions for SFT)."""

    out: str = field(default="generalpoints.jsonl", metadata={"help": "RFT rows: prompt, reference, grader, "
                                                                     "solution, rule"})
    sft_out: str | None = field(default=None, metadata={"help": "also write {messages} rows with the worked "
                                                                "solutions here, for `align sft`"})
    n: int = field(default=500, metadata={"help": "number of tasks"})
    n_cards: int = field(default=4, metadata={"help": "cards per deal (1-5; 2 suits a 135M model on a CPU)"})
    target: int | None = field(default=24, metadata={"help": "the number to reach (24 in the paper); null in YAML: a "
                                                             "reachable target per deal, up to max_target"})
    max_target: int = field(default=30, metadata={"help": "largest drawn target when target is unset"})
    max_rank: int = field(default=13, metadata={"help": "highest card dealt: 13 deals A..K, smaller keeps numbers "
                                                        "small"})
    rule: str = field(default="face10", metadata={"help": "face10: J/Q/K = 10 (training); ordinal: J/Q/K = "
                                                          "11/12/13 (the out-of-distribution test)",
                                                  "choices": list(RULES)})
    require_face: bool = field(default=False, metadata={"help": "only deals with a J, Q or K (where the rule "
                                                                "matters)"})
    seed: int = field(default=0, metadata={"help": "random seed (use another for test sets)"})

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"rule {self.rule!r} is not one of {', '.join(RULES)}")
        if self.n < 1 or not 1 <= self.n_cards <= 5 or not 1 <= self.max_rank <= 13 or self.max_target < 1:
            raise ValueError("n >= 1, n_cards in 1..5, max_rank in 1..13 and max_target >= 1 are required")


def main(argv: list[str] | None = None) -> int:
    from prefloop.config import parse_config
    from prefloop.data import write_records
    from prefloop.errors import InputError

    cfg = parse_config(GeneralPointsConfig, argv, prog="align generalpoints")
    try:
        rows = generate_tasks(cfg.n, cfg.n_cards, cfg.target, cfg.max_rank, cfg.rule, cfg.seed, cfg.max_target,
                              cfg.require_face)
    except ValueError as err:  # e.g. no solvable deal for this target
        raise InputError(str(err)) from None
    write_records(rows, cfg.out)
    if cfg.sft_out:
        write_records([{"messages": [{"role": "user", "content": r["prompt"]},
                                     {"role": "assistant", "content": r["solution"]}]} for r in rows], cfg.sft_out)
    print(f"wrote {len(rows)} {cfg.rule} tasks to {cfg.out}" + (f" and worked solutions to {cfg.sft_out}"
                                                                  if cfg.sft_out else ""))
    return 0
