"""AI annotators: a language-model judge that compares responses against a written constitution
(Constitutional AI, Bai et al. 2022; RLAIF, Lee et al. 2023).

    judge = ConstitutionJudge.load()                 # the embedded SmolLM2, DEFAULT_CONSTITUTION
    judge.prob_first_better(conversation, a, b)      # P(A better), averaged over both orders
    annotator = AIAnnotator(judge)                   # a simulate.Policy: task -> /submit answer

The judge reads no sample: as RLAIF does, it takes the next-token distribution after the
question and compares the probabilities of the answer letters, P(A) / (P(A) + P(B)). Each pair
is asked in both orders and the two answers averaged, which removes the judge's own position
bias (Zheng et al. 2023, "Judging LLM-as-a-judge"). The responses are untrusted text inside the
judge's prompt: a response can try to talk the judge round (prompt injection), as with any
LLM judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

DEFAULT_CONSTITUTION = """\
1. Choose the response that answers the user's request most directly and correctly.
2. Choose the response that is more honest: no invented facts, uncertainty admitted.
3. Choose the response that is harmless: nothing dangerous, hateful or deceptive.
4. Prefer clear and concise wording over padding and repetition."""

QUESTION = """Judge two assistant responses by this constitution:
{constitution}

The conversation:
{conversation}

Response A:
{a}

Response B:
{b}

Which response follows the constitution better? Answer with one letter, A or B."""


@dataclass
class ConstitutionJudge:
    model: object
    tokenizer: object
    constitution: str = DEFAULT_CONSTITUTION
    max_length: int = 1024  # prompt tokens kept (the end: the question and the responses)

    @classmethod
    def load(cls, model_name: str | None = None, constitution: str | None = None) -> "ConstitutionJudge":
        """The judge on `model_name` (any local causal LM; None = the embedded model)."""
        from prefloop.models import load_causal_lm

        model, tokenizer = load_causal_lm(model_name)
        return cls(model.eval(), tokenizer, constitution or DEFAULT_CONSTITUTION)

    def _letter_ids(self) -> tuple[int, int]:
        a, b = (self.tokenizer.encode(x, add_special_tokens=False)[-1] for x in ("A", "B"))
        return a, b

    def _prob_a(self, conversation: list, first: str, second: str) -> float:
        """P(the judge answers A) with `first` shown as A, from the next-token distribution."""
        import torch

        from prefloop.generation import tokenize_prompts

        shown = "\n".join(f"{m['role']}: {m['content']}" for m in conversation)
        question = QUESTION.format(constitution=self.constitution, conversation=shown, a=first, b=second)
        device = next(self.model.parameters()).device
        ids, mask = tokenize_prompts(self.tokenizer, [[{"role": "user", "content": question}]],
                                     self.max_length, device)
        with torch.no_grad():
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits[0, -1]  # (V,)
        a, b = self._letter_ids()
        return float(torch.softmax(logits[[a, b]].float(), dim=0)[0])

    def prob_first_better(self, conversation: list, a: str, b: str) -> float:
        """P(a better than b), averaged over both orders of showing them."""
        return 0.5 * (self._prob_a(conversation, a, b) + 1.0 - self._prob_a(conversation, b, a))


@dataclass
class AIAnnotator:
    """A simulate.Policy backed by a ConstitutionJudge: pairwise tasks get a choice, ranking tasks
    an order by mean pairwise win probability. |P(A better) - 1/2| < tie_margin is a tie;
    above much_better_margin, "much better"."""

    judge: ConstitutionJudge
    tie_margin: float = 0.02
    much_better_margin: float = 0.3

    def __call__(self, task: dict) -> dict:
        texts = [r["text"] for r in task["responses"]]
        labels = [r["label"] for r in task["responses"]]
        if len(texts) == 2:
            p = self.judge.prob_first_better(task["conversation"], texts[0], texts[1])
            return {"choice": self._choice(p), "rationale": f"AI judge: P(A better) = {p:.3f}"}
        wins = [0.0] * len(texts)
        for i, j in combinations(range(len(texts)), 2):
            p = self.judge.prob_first_better(task["conversation"], texts[i], texts[j])
            wins[i] += p
            wins[j] += 1 - p
        order = sorted(range(len(texts)), key=lambda i: -wins[i])
        return {"ranking": [labels[i] for i in order],
                "rationale": "AI judge: expected wins " + ", ".join(f"{labels[i]}={wins[i]:.2f}" for i in order)}

    def _choice(self, p: float) -> str:
        if abs(p - 0.5) < self.tie_margin:
            return "tie"
        strength = "much_better" if abs(p - 0.5) >= self.much_better_margin else "better"
        return f"{'a' if p > 0.5 else 'b'}_{strength}"
