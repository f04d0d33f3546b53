"""Batched chat sampling shared by candidate generation and the RL rollouts.

Prompts are conversations rendered with the model's chat template and left-padded,
so that every row's response starts at the same column and the KV cache is used
by one `generate` call per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingConfig:
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Samples:
    prompt_ids: "torch.Tensor"  # (B, P) left-padded
    prompt_mask: "torch.Tensor"  # (B, P)
    response_ids: "torch.Tensor"  # (B, R) right-padded with pad_token_id after EOS
    response_mask: "torch.Tensor"  # (B, R) 1 up to and including EOS
    texts: list[str] = field(default_factory=list)  # decoded responses, special tokens removed
    finished: list[bool] = field(default_factory=list)  # the response ended with EOS


def encode_chats(tokenizer, conversations: list, max_prompt_tokens: int | None = None):
    """Left-padded input_ids/attention_mask for a batch of conversations (or plain strings)."""
    texts = [render_chat(tokenizer, conv) for conv in conversations]
    previous = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False,
                          truncation=max_prompt_tokens is not None, max_length=max_prompt_tokens)
    finally:
        tokenizer.padding_side = previous
    return batch["input_ids"], batch["attention_mask"]


def render_chat(tokenizer, conversation) -> str:
    """The prompt text the model sees: chat template + generation prompt (plain text if no template)."""
    if isinstance(conversation, str):
        conversation = [{"role": "user", "content": conversation}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in conversation) + "\n"


def sample(model, tokenizer, conversations: list, cfg: SamplingConfig,
           max_prompt_tokens: int | None = None) -> Samples:
    """Sample one response per conversation (repeat conversations for several)."""
    import torch

    prompt_ids, prompt_mask = encode_chats(tokenizer, conversations, max_prompt_tokens)
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    do_sample = cfg.temperature > 0
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=cfg.max_new_tokens,
            do_sample=do_sample, temperature=cfg.temperature if do_sample else None,
            top_p=cfg.top_p if do_sample else None, top_k=cfg.top_k if do_sample else None,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
    response_ids = out[:, prompt_ids.shape[1]:]  # (B, R)
    response_mask, finished = _mask_after_eos(response_ids, tokenizer.eos_token_id)
    response_ids = response_ids.masked_fill(response_mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    return Samples(prompt_ids, prompt_mask, response_ids, response_mask, [t.strip() for t in texts], finished)


def _mask_after_eos(response_ids, eos_token_id):
    """(B, R) mask that keeps tokens up to and including the first EOS; and whether EOS came."""
    import torch

    is_eos = response_ids == eos_token_id  # (B, R)
    seen_before = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()  # EOS strictly before this column
    mask = (seen_before == 0).long()
    return mask, is_eos.any(dim=1).tolist()
