"""One rule for prompts, everywhere (labeling, reward model, align):

a prompt is a conversation (a list of {"role", "content"}) or a string, and a string is one user turn.
A model answers a prompt through its chat template (with the generation prompt) when its tokenizer
has one; only a tokenizer without a template reads a string prompt as plain text to continue.
`labeling import` stores a string as that same user turn, so a prompt means the same thing in the
store, in an export, and in `align ppo --prompts`.
"""

from __future__ import annotations

Message = dict  # {"role": ..., "content": ...}


def as_conversation(prompt) -> list[Message]:
    """The conversation form of a prompt: a string becomes one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt):
        return [{"role": m.get("role", "user"), "content": m["content"]} for m in prompt]
    raise ValueError(f"a prompt must be a string or a list of {{role, content}} messages, got {type(prompt).__name__}")


def render_prompt(tokenizer, prompt) -> tuple[str, bool]:
    """(text the model continues, whether the tokenizer should add its special tokens).

    A chat template writes its own special tokens; plain text gets the tokenizer's (BOS, if any).
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(as_conversation(prompt), add_generation_prompt=True, tokenize=False)
        return text, False
    if isinstance(prompt, str):
        return prompt, True
    raise ValueError("this tokenizer has no chat template, so it cannot answer a conversation prompt; "
                     "give plain-text prompts")
