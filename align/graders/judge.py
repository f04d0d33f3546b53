"""A language-model judge: the model reads a rubric, the question, the reference and the answer, and says Yes or No.

The score is the judge's probability of "Yes" among {Yes, No} for its next token,
P(Yes) / (P(Yes) + P(No)), so it is graded (partial credit) and deterministic: no sampling,
no parsing of free text (the "G-Eval" idea of weighting by token probabilities, Liu et al.
2023, reduced to one binary question). The embedded SmolLM2-135M is the default judge: it
runs anywhere but is a weak judge; name a stronger local model with `model` for real use.

The answer is untrusted text placed inside the judge's prompt: it cannot run anything, but
it can try to talk the judge into "Yes" (prompt injection). Weigh a model grader against
rule-based ones in a mix for that reason.
"""

from __future__ import annotations

import functools

from align.graders.base import Grade, checked, prompt_text

JUDGE_TEMPLATE = (
    "You are a strict grader. Rubric: {rubric}\n\n"
    "Question:\n{question}\n\nReference answer:\n{reference}\n\nAnswer to grade:\n{response}\n\n"
    "Does the answer to grade meet the rubric? Reply with Yes or No only."
)
DEFAULT_RUBRIC = "The answer is correct and agrees with the reference answer."
MAX_JUDGED_CHARS = 4_000  # longer answers are cut: the judge's context is small


@functools.lru_cache(maxsize=2)
def load_judge(model: str | None):
    """(model, tokenizer, yes id, no id), loaded once per model name."""
    from prefloop.models import load_causal_lm

    lm, tokenizer = load_causal_lm(model)
    yes, no = (tokenizer.encode(word, add_special_tokens=False)[0] for word in ("Yes", "No"))
    return lm.eval(), tokenizer, yes, no


def model_judge(prompt, response, reference, rubric: str = DEFAULT_RUBRIC, model: str | None = None) -> Grade:
    """P(Yes) / (P(Yes) + P(No)) of the judge's first answer token."""
    import torch

    text, bad = checked(response)
    if bad is not None:
        return bad
    lm, tokenizer, yes, no = load_judge(model)
    question = JUDGE_TEMPLATE.format(rubric=rubric, question=prompt_text(prompt)[:MAX_JUDGED_CHARS],
                                     reference=str(reference)[:MAX_JUDGED_CHARS], response=text[:MAX_JUDGED_CHARS])
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = lm(input_ids=ids.to(lm.device)).logits[0, -1].float()  # (V,)
    p_yes = torch.softmax(logits[[yes, no]], dim=0)[0].item()
    return Grade(p_yes, "" if p_yes > 0.5 else f"judge says No (P(Yes) = {p_yes:.2f})")
