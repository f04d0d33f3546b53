"""Sampling responses from a policy, and the ONE way to get their log-probabilities.

Shared by every on-policy trainer (through align.onpolicy.toolkit). Sampling
itself lives in `prefloop.generation` (labeling generates candidates with it too) and is
re-exported here:

    rollout = generate_responses(model, tokenizer, prompts, max_new_tokens=64, temperature=0.7)
    rollout.texts            # list[str], the decoded responses (special tokens dropped)
    rollout.response_ids     # (B, R) token ids, right-padded after EOS
    rollout.response_mask    # (B, R) 1 on response tokens up to and including EOS
    rollout.terminated       # (B,) True where the response ended with EOS
    logprobs = response_logprobs(model, rollout, temperature=0.7)   # (B, R); under no_grad unless training

The log-prob path, written once: rollout -> backbone hidden states at the response positions
(`response_hidden_states`) -> lm_head / T (`response_logits`) -> log softmax at the sampled token
(`token_logprobs`). Only response positions are projected onto the vocabulary.

A prompt is a conversation or a string, which is one user turn (prefloop.chat); prompts are
left-padded so all rows end at the same column; sampling uses the KV cache.

Temperature: generation samples from softmax(z / T) with top-k and top-p switched
off, and `response_logprobs` recomputes log softmax(z / T) of the same tokens, so the
log-probabilities belong to the distribution that was actually sampled [N-details,
"the temperature must be applied when recomputing log-probs"].
"""

from __future__ import annotations

import torch

from align.logprobs import vocab_logits_fp32
from prefloop.generation import (  # re-exported: the rollout API in one place
    Rollout,
    eos_token_ids,
    generate_responses,
    tokenize_prompts,
)

__all__ = ["Rollout", "eos_token_ids", "generate_responses", "tokenize_prompts", "causal_lm_parts",
           "response_hidden_states", "attention_without_cudnn", "response_logits", "token_logprobs",
           "PolicyModule", "response_logprobs", "micro_batch", "select", "concat"]


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
    with attention_without_cudnn():
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).last_hidden_state  # (B, P + R, H)
    return hidden[:, response_start - 1: -1]  # the state before token t predicts token t


def attention_without_cudnn():
    """Scaled dot-product attention by the flash, memory-efficient or math kernel: not cuDNN's.

    On an H200 (torch 2.11, bf16) the first PPO and online-DPO updates got NaN gradients; for PPO autograd's
    anomaly mode named cuDNN's attention backward (bench/gpu_check.sh, step ppo-probe). Without that kernel
    both trained. The suspect is left padding: each pad position is a query whose keys are all masked. An
    isolated left-padded batch (gpu_check.py attention) gave finite gradients on every kernel, so the exact
    trigger is not pinned down. The other kernels compute the same attention; on a CPU this is a no-op.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token]: (B, R, V), (B, R) -> (B, R). Cheaper than log_softmax + gather."""
    logits = logits.float()
    return torch.gather(logits, -1, token_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def response_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int,
                    temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits / T (B, R, V), hidden states (B, R, H)) at the positions that predict the response tokens.

    The one forward every log-probability here goes through (policy, reference, critic-sharing policy).
    The logits are fp32 under any autocast (align.logprobs): bf16 logits round log π(y_t|x) to steps of
    1/16 near −log V, more than PPO's and GRPO's ratios and KL terms can afford.
    """
    backbone, lm_head = causal_lm_parts(model)
    hidden = response_hidden_states(backbone, input_ids, attention_mask, response_start)  # (B, R, H)
    return vocab_logits_fp32(lm_head, hidden) / temperature, hidden  # (B, R, V) fp32, (B, R, H)


class PolicyModule(torch.nn.Module):
    """pi_theta as the module the engine prepares: its forward is the log-prob path, so that DDP's gradient
    hooks, FSDP2's gathers and DeepSpeed's partitions see every pass that carries gradients.

    forward -> (logits (B, R, V) at temperature T, None): PPO's ActorCritic (align/onpolicy/critic.py) returns its
    values in the second place. `_no_split_modules` are the policy's, so FSDP2 wraps one decoder layer
    per unit (accelerate's TRANSFORMER_BASED_WRAP reads them from the prepared module).
    """

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy
        lm = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        self._no_split_modules = getattr(lm, "_no_split_modules", None)

    def forward(self, input_ids, attention_mask, response_start: int, temperature: float):
        logits, _ = response_logits(self.policy, input_ids, attention_mask, response_start, temperature)
        return logits, None


def response_logprobs(model, rollout: Rollout, temperature: float = 1.0, batch_size: int | None = None,
                      entropy: bool = False):
    """log pi(y_t | x, y_<t) at temperature T for every response token. -> (B, R); 0 on padding. With
    `entropy`: (log-probs, the policy's entropy per token (B, R) without gradients).

    `model` is a causal LM or a module whose forward is the log-prob path (PolicyModule, ActorCritic, or
    the engine's wrapper around either). Gradients flow when the caller has them on (the policy in an
    update); wrap in no_grad otherwise.
    """
    # a causal LM is called through the log-prob path directly: no module is built per call (under ZeRO-3
    # a module built while DeepSpeed's partitioning is active would take the model's weights with it)
    forward = model if _is_logprob_module(model) else (
        lambda ids, mask, start, t: (response_logits(model, ids, mask, start, t)[0], None))
    width = rollout.response_ids.shape[1]
    out, ent = [], []
    for idx in torch.arange(len(rollout)).split(batch_size or len(rollout)):
        mb = micro_batch(rollout, idx)
        logits, _ = forward(mb["input_ids"], mb["attention_mask"], mb["response_start"], temperature)
        r = mb["response_ids"].shape[1]
        if entropy:  # one logsumexp for both: H = logsumexp(z) - sum softmax(z) * z
            z = logits.float()
            lse = torch.logsumexp(z, dim=-1)  # (b, r)
            logprobs = torch.gather(z, -1, mb["response_ids"].unsqueeze(-1)).squeeze(-1) - lse
            with torch.no_grad():
                ent.append(torch.nn.functional.pad(lse - (torch.softmax(z, -1) * z).sum(-1), (0, width - r)))
        else:
            logprobs = token_logprobs(logits, mb["response_ids"])
        out.append(torch.nn.functional.pad(logprobs, (0, width - r)))
    logprobs = torch.cat(out) * rollout.response_mask
    return (logprobs, torch.cat(ent) * rollout.response_mask) if entropy else logprobs


def _is_logprob_module(model) -> bool:
    inner = getattr(model, "module", model)  # DDP / DeepSpeed keep the prepared module in .module
    return isinstance(inner, PolicyModule)


# ---------------------------------------------------------------------------
# rows of a rollout
# ---------------------------------------------------------------------------


def micro_batch(rollout: Rollout, idx: torch.Tensor, per_token: dict[str, torch.Tensor] | None = None) -> dict:
    """Rows `idx` of a rollout, trimmed to the columns they use: left padding shared by all
    rows and response columns past the longest response are cut (less compute, same result)."""
    prompt_mask = rollout.prompt_mask[idx]
    p0 = prompt_mask.shape[1] - int(prompt_mask.sum(1).max())
    r = max(int(rollout.response_mask[idx].sum(1).max()), 1)
    response_ids, response_mask = rollout.response_ids[idx, :r], rollout.response_mask[idx, :r]
    mb = {
        "input_ids": torch.cat([rollout.prompt_ids[idx, p0:], response_ids], dim=1),  # (b, p + r)
        "attention_mask": torch.cat([prompt_mask[:, p0:], torch.ones_like(response_mask)], dim=1),
        "response_start": prompt_mask.shape[1] - p0,
        "response_ids": response_ids, "response_mask": response_mask,
    }
    for key, value in (per_token or {}).items():
        mb[key] = value[idx, :r]
    return mb


def select(rollout: Rollout, rows: torch.Tensor) -> Rollout:
    """The sub-rollout of the given rows, trimmed to its longest response."""
    rows = rows.to(rollout.prompt_ids.device)
    mask = rollout.response_mask[rows]
    width = max(int(mask.sum(1).max()) if len(rows) else 0, 1)
    return Rollout(rollout.prompt_ids[rows], rollout.prompt_mask[rows], rollout.response_ids[rows][:, :width],
                   mask[:, :width], rollout.terminated[rows], [rollout.texts[i] for i in rows.tolist()])


def concat(*parts: Rollout) -> Rollout:
    """Stack rollouts: prompts left-padded to the widest, responses right-padded to the longest (padding is
    masked out of every pass)."""
    p_width = max(r.prompt_ids.shape[1] for r in parts)
    r_width = max(r.response_ids.shape[1] for r in parts)

    def pad(t: torch.Tensor, width: int, left: bool = False) -> torch.Tensor:
        extra = width - t.shape[1]
        return torch.nn.functional.pad(t, (extra, 0) if left else (0, extra), value=0)

    return Rollout(torch.cat([pad(r.prompt_ids, p_width, left=True) for r in parts]),
                   torch.cat([pad(r.prompt_mask, p_width, left=True) for r in parts]),
                   torch.cat([pad(r.response_ids, r_width) for r in parts]),
                   torch.cat([pad(r.response_mask, r_width) for r in parts]),
                   torch.cat([r.terminated for r in parts]), [t for r in parts for t in r.texts])
