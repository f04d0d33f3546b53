"""Turning (prompt, response) into the token ids a reward model reads: one function for training and scoring.

The reward is read at the last token of `prompt + response` rendered with the tokenizer's
chat template, the same rendering TRL's RewardTrainer uses for conversational data
(`apply_chat_template(prompt + chosen)`), so a model trained here scores TRL-style data and back.
"""

from __future__ import annotations

from prefloop.chat import Message, as_conversation  # noqa: F401  (re-exported: the one prompt rule)


def as_messages(response) -> list[Message]:
    """A response is a string or the export's `[{"role": "assistant", "content": ...}]`."""
    if isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    if isinstance(response, dict) and "content" in response:
        return [{"role": response.get("role", "assistant"), "content": response["content"]}]
    return as_conversation(response) if isinstance(response, list) else as_conversation(None)


def response_text(response) -> str:
    return "\n".join(m["content"] for m in as_messages(response))


def encode(tokenizer, prompt, response, max_length: int | None = None) -> list[int]:
    """Token ids of prompt + response; too-long inputs keep their first token and their end.

    The first token (BOS, <|im_start|> or an encoder's [CLS]) is kept because encoders pool
    there; the end is kept because decoders read the reward at the last token.
    """
    messages = as_conversation(prompt) + as_messages(response)
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        return _truncate(list(ids), max_length)
    # base models and encoders: plain text, ended by EOS where the model has one
    return encode_text(tokenizer, "\n\n".join(m["content"] for m in messages), max_length)


def encode_text(tokenizer, text: str, max_length: int | None = None) -> list[int]:
    """Token ids of an already rendered prompt + response (what OpenRLHF sends a remote reward model).

    Rendered with this tokenizer's chat template (`apply_chat_template(..., tokenize=False)`), the
    text gives exactly `encode`'s ids: the template holds the special tokens, so none is added. Without
    a template the text is tokenized as `encode` does it: the tokenizer's own BOS, EOS appended.
    """
    if getattr(tokenizer, "chat_template", None):
        return _truncate(list(tokenizer(text, add_special_tokens=False)["input_ids"]), max_length)
    ids = list(tokenizer(text)["input_ids"])
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids = ids + [tokenizer.eos_token_id]
    return _truncate(ids, max_length)


def _truncate(ids: list[int], max_length: int | None) -> list[int]:
    if max_length is not None and len(ids) > max_length:
        ids = ids[:1] + ids[len(ids) - (max_length - 1):]
    return ids


def pad_right(sequences: list[list[int]], pad_id: int):
    """(input_ids, attention_mask), both (B, T_max), right-padded.

    Right padding keeps position ids equal to the unpadded ones, so a padded batch gives the
    same reward as scoring each sequence alone (left padding would shift rotary positions).
    """
    import torch

    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)  # (B, T)
    for i, s in enumerate(sequences):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention_mask[i, : len(s)] = 1
    return input_ids, attention_mask
