"""The PPO critic: V(s_t) as a value head on the policy, or a separate model initialised from the reward model.

`ActorCritic` holds pi_theta and V in one module so that the engine (accelerate's DDP, FSDP2 or DeepSpeed)
reduces both gradients; its forward is the shared log-prob path (align.onpolicy.rollout.PolicyModule) plus V.
See align.onpolicy.ppo_config for the trade-off between the two critics.
"""

from __future__ import annotations

import torch
from torch import nn

from align.onpolicy.rollout import PolicyModule, response_hidden_states, response_logits
from prefloop.errors import InputError


class ActorCritic(PolicyModule):
    """pi_theta (a causal LM, maybe with LoRA) and V(s_t) in one module.

    forward -> (logits (B, R, V) at temperature T, values (B, R)), both at the positions
    that predict the R response tokens: V(s_t) is read where pi(y_t | s_t) is.
    """

    def __init__(self, policy: nn.Module, critic: nn.Module | None = None):
        super().__init__(policy)
        self.critic = critic  # a separate sequence-classification model, or None
        # Zero-initialised: the value head starts from V = 0 rather than from noise.
        hidden_size = policy.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden_size, 1) if critic is None else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask, response_start: int, temperature: float):
        logits, hidden = response_logits(self.policy, input_ids, attention_mask, response_start, temperature)
        if self.critic is None:
            # fp32 head on fp32 states; under FSDP2 its weight is cast to the bf16 the whole model computes in
            values = self.value_head(hidden.to(self.value_head.weight.dtype)).float().squeeze(-1)  # (B, R)
        else:
            c_hidden = response_hidden_states(self.critic.base_model, input_ids, attention_mask, response_start)
            values = self.critic.score(c_hidden).float().squeeze(-1)  # (B, R)
        return logits, values


def load_critic(cfg, tokenizer, device):
    """The separate critic: the reward model's backbone and scalar head, trained as V(s_t).

    The reward model's normalisation r = (head - offset) / scale (and the mean over an
    ensemble's heads) is folded into a new one-output head, so the critic starts out
    predicting, at every token, the normalised reward the full response would get.
    """
    if cfg.critic != "reward_model":
        return None
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefloop.models import resolve_model

    path = resolve_model(cfg.critic_model)
    try:
        critic = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        critic_vocab = AutoTokenizer.from_pretrained(path).get_vocab()
    except (OSError, ValueError) as err:
        raise InputError(f"critic model {cfg.critic_model}: cannot be loaded ({str(err).splitlines()[0]})") from err
    if not isinstance(getattr(critic, "score", None), nn.Linear):
        raise InputError(f"critic model {cfg.critic_model}: needs a decoder with a linear 'score' head "
                         f"(got {type(critic).__name__})")
    if critic_vocab != tokenizer.get_vocab():
        raise InputError(f"critic model {cfg.critic_model}: its tokenizer differs from the policy's; "
                         "the critic reads the policy's token ids")
    heads = critic.config.num_labels
    offset = torch.tensor(getattr(critic.config, "reward_offset", None) or [0.0] * heads)  # (H,)
    scale = torch.tensor(getattr(critic.config, "reward_scale", None) or [1.0] * heads)  # (H,)
    old = critic.score
    head = nn.Linear(old.in_features, 1, bias=True, dtype=torch.float32)
    with torch.no_grad():
        bias = old.bias if old.bias is not None else torch.zeros(heads)
        head.weight.copy_((old.weight / scale[:, None]).mean(0, keepdim=True))
        head.bias.copy_(((bias - offset) / scale).mean().reshape(1))
    critic.score = head
    critic.config.num_labels = 1
    return critic.to(device)
