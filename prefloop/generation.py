"""Batched chat sampling shared by candidate generation (labeling) and the RL rollouts (align).

    rollout = generate_responses(model, tokenizer, prompts, max_new_tokens=64, temperature=0.7)
    rollout.texts            # list[str], the decoded responses (special tokens dropped)
    rollout.response_ids     # (B, R) token ids, right-padded after EOS
    rollout.response_mask    # (B, R) 1 on response tokens up to and including EOS
    rollout.terminated       # (B,) True where the response ended with EOS

A prompt is a conversation (a list of {"role", "content"}) or a string, which is one user
turn (prefloop.chat): both are rendered with the tokenizer's chat template and the generation
prompt; only a tokenizer without a template continues a string as plain text. Prompts
are left-padded so all rows end at the same column; sampling uses the KV cache.

Sampling is pure softmax(z / T) (top-k and top-p off unless asked for), so that
`align.onpolicy.rollout.response_logprobs` can recompute the log-probabilities of exactly the
distribution that was sampled [N-details, "the temperature must be applied when
recomputing log-probs"].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P) 1 on real prompt tokens
    response_ids: torch.Tensor  # (B, R) right-padded after EOS
    response_mask: torch.Tensor  # (B, R) 1 on response tokens up to and including the first EOS
    terminated: torch.Tensor  # (B,) bool, the response ended with EOS within max_new_tokens
    texts: list[str]  # decoded responses, special tokens skipped

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)  # (B, P + R)

    @property
    def attention_mask(self) -> torch.Tensor:
        # Response positions are all visible, as during generation (tokens after EOS are
        # masked out of every loss, and a causal model never lets them touch earlier ones).
        return torch.cat([self.prompt_mask, torch.ones_like(self.response_mask)], dim=1)

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(1)  # (B,)

    def __len__(self) -> int:
        return len(self.texts)


def tokenize_prompts(tokenizer, prompts: list, max_prompt_length: int | None = None,
                     device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, P), mask (B, P)), left-padded; over-long prompts lose their beginning."""
    from prefloop.chat import render_prompt

    rendered = [render_prompt(tokenizer, prompt) for prompt in prompts]  # the one rule for prompts
    texts = [text for text, _ in rendered]
    add_special = all(special for _, special in rendered)
    side, trunc = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special,
                        truncation=max_prompt_length is not None, max_length=max_prompt_length)
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, trunc
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a response: the generation config's EOS ids and the tokenizer's."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@torch.no_grad()
def generate_responses(model, tokenizer, prompts: list, max_new_tokens: int, temperature: float = 1.0, *,
                       max_prompt_length: int | None = None, top_k: int = 0, top_p: float = 1.0,
                       synced_gpus: bool = False) -> Rollout:
    """Sample one response per prompt with the KV cache; stop each row at EOS.

    `model` is a causal LM (a peft model works; unwrap DDP first). Sampling is pure
    softmax(z / temperature) unless top_k / top_p are set (then the recomputed
    log-probs no longer describe the sampling distribution: PPO keeps them off). `synced_gpus`: weights
    sharded over processes (FSDP2, ZeRO-3) gather in every forward, so each process keeps stepping until
    all have finished (transformers' flag of that name).
    """
    from transformers import GenerationConfig

    if temperature <= 0:
        raise ValueError("temperature must be > 0 (greedy decoding has no log-probabilities to train on)")
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = tokenize_prompts(tokenizer, prompts, max_prompt_length, device)
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    # An explicit config: the checkpoint's own generation_config (top_k=50, repetition
    # penalties, ...) would silently change the distribution being sampled.
    gen_config = GenerationConfig(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                                  max_new_tokens=max_new_tokens, min_new_tokens=0, eos_token_id=eos,
                                  pad_token_id=pad, use_cache=True)
    out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=gen_config,
                         **({"synced_gpus": True} if synced_gpus else {}))
    response_ids = out[:, prompt_ids.shape[1]:]  # (B, R)
    response_mask, terminated = _mask_after_eos(response_ids, eos)
    response_ids = response_ids.masked_fill(response_mask == 0, pad)
    texts = [tokenizer.decode(ids[: int(n)], skip_special_tokens=True)
             for ids, n in zip(response_ids.tolist(), response_mask.sum(1).tolist())]
    return Rollout(prompt_ids, prompt_mask, response_ids, response_mask, terminated, texts)


def _mask_after_eos(response_ids: torch.Tensor, eos: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (B, R): 1 up to and including the first EOS, terminated (B,) bool)."""
    is_eos = torch.isin(response_ids, torch.tensor(eos, device=response_ids.device))  # (B, R)
    terminated = is_eos.any(1)
    # Tokens strictly after the first EOS are those with an EOS before them.
    eos_before = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    return (~eos_before).long(), terminated


@dataclass
class SamplingConfig:
    """Settings of `labeling generate`, stored with every candidate."""

    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}
