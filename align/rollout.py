"""Sampling responses from a policy, and the log-probabilities of what was sampled.

Shared by PPO, online DPO and GRPO/RLOO. Sampling itself lives in `prefloop.generation`
(labeling generates candidates with it too) and is re-exported here:

    rollout = generate_responses(model, tokenizer, prompts, max_new_tokens=64, temperature=0.7)
    rollout.texts            # list[str], the decoded responses (special tokens dropped)
    rollout.response_ids     # (B, R) token ids, right-padded after EOS
    rollout.response_mask    # (B, R) 1 on response tokens up to and including EOS
    rollout.terminated       # (B,) True where the response ended with EOS
    logprobs = response_logprobs(model, rollout, temperature=0.7)   # (B, R), no grad

A prompt is a conversation (a list of {"role", "content"}; rendered with the tokenizer's
chat template and the generation prompt) or a plain string (tokenized as is). Prompts
are left-padded so all rows end at the same column; sampling uses the KV cache.

Temperature: generation samples from softmax(z / T) with top-k and top-p switched
off, and `response_logprobs` recomputes log softmax(z / T) of the same tokens, so the
log-probabilities belong to the distribution that was actually sampled [N-details,
"the temperature must be applied when recomputing log-probs"].
"""

from __future__ import annotations

import torch

from prefloop.generation import (  # re-exported: the rollout API in one place
    Rollout,
    eos_token_ids,
    generate_responses,
    tokenize_prompts,
)

__all__ = ["Rollout", "eos_token_ids", "generate_responses", "tokenize_prompts",
           "causal_lm_parts", "response_hidden_states", "token_logprobs", "response_logprobs"]


# ---------------------------------------------------------------------------
# log-probabilities of a response under a model
# ---------------------------------------------------------------------------


def causal_lm_parts(model):
    """(backbone, lm_head) of a causal LM, looking through a peft wrapper.

    LoRA layers live inside the backbone's modules, so calling the backbone directly
    still applies (or, under `disable_adapter()`, skips) the adapter.
    """
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return lm.base_model, lm.get_output_embeddings()


def response_hidden_states(backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           response_start: int) -> torch.Tensor:
    """Final hidden states at the positions that predict response tokens. -> (B, R, H).

    Position ids follow the attention mask (left padding), exactly as `generate` builds
    them, so the recomputed log-probs match those the sampler used.
    """
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False).last_hidden_state  # (B, P + R, H)
    return hidden[:, response_start - 1: -1]  # the state before token t predicts token t


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token]: (B, R, V), (B, R) -> (B, R). Cheaper than log_softmax + gather."""
    logits = logits.float()
    return torch.gather(logits, -1, token_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


@torch.no_grad()
def response_logprobs(model, rollout: Rollout, temperature: float = 1.0, batch_size: int | None = None) -> torch.Tensor:
    """log pi(y_t | x, y_<t) at temperature T for every response token. -> (B, R); 0 on padding."""
    backbone, lm_head = causal_lm_parts(model)
    P = rollout.prompt_ids.shape[1]
    chunks = []
    step = batch_size or len(rollout)
    for i in range(0, len(rollout), step):
        hidden = response_hidden_states(backbone, rollout.input_ids[i:i + step],
                                        rollout.attention_mask[i:i + step], P)
        logits = lm_head(hidden) / temperature  # (b, R, V)
        chunks.append(token_logprobs(logits, rollout.response_ids[i:i + step]))
    return torch.cat(chunks) * rollout.response_mask
