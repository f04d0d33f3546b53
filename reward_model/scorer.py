"""RewardScorer: the one way everything downstream (PPO, online DPO, eval, active learning) reads a reward.

    from reward_model.scorer import RewardScorer, load_reward
    scorer = RewardScorer.from_pretrained("runs/rm")        # a `reward-model train` output
    scorer.score(prompts, responses)                         # -> list[float], normalised
    means, stds = scorer.score_with_std(prompts, responses)  # ensembles: spread across heads
    reward = load_reward("runs/rm")                          # or load_reward("my.module:my_reward")
    reward = load_reward("http://rmhost:5000")               # a `reward-model serve` server (reward_model.remote)

Scores are normalised, r = (raw - offset) / scale with offset/scale fitted on a reference
sample after training (mean 0, std 1 there), so a KL coefficient means the same thing
whichever reward model is plugged in.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable, Sequence

from reward_model.encoding import encode, encode_text, pad_right

RewardFn = Callable[[Sequence, Sequence[str]], list]


class RewardScorer:
    """Batched, length-sorted scoring with a sequence-classification model (num_labels = heads)."""

    def __init__(self, model, tokenizer, offset=None, scale=None, batch_size: int = 16,
                 max_length: int | None = 1024, device=None):
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        heads = self.n_heads
        self.offset = torch.tensor(offset if offset is not None else [0.0] * heads, dtype=torch.float32)  # (H,)
        self.scale = torch.tensor(scale if scale is not None else [1.0] * heads, dtype=torch.float32)  # (H,)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # The sequence-classification head finds the last real token through config.pad_token_id.
        model.config.get_text_config().pad_token_id = self.tokenizer.pad_token_id

    @classmethod
    def from_pretrained(cls, path, device=None, batch_size: int = 16, dtype=None) -> "RewardScorer":
        """Load a `reward-model train` directory (or any num_labels>=1 sequence-classification model).

        `dtype` defaults to the hardware's precision (prefloop.hardware), like every model here.
        """
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from prefloop.hardware import detect
        from prefloop.models import ModelNotFoundError
        from reward_model.artifact import read_metadata

        hw = detect()
        resolved = check_reward_model(path)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(resolved, dtype=dtype or hw.dtype)
            tokenizer = AutoTokenizer.from_pretrained(resolved)
        except (OSError, ValueError) as err:
            raise ModelNotFoundError(f"reward model {path}: cannot be loaded ({str(err).splitlines()[0]})") from err
        meta = read_metadata(resolved) if Path(resolved).is_dir() else {}
        offset = meta.get("reward_offset", getattr(model.config, "reward_offset", None))
        scale = meta.get("reward_scale", getattr(model.config, "reward_scale", None))
        max_length = meta.get("max_length", meta.get("config", {}).get("max_length", 1024))
        model = model.to(device or hw.device).eval()
        return cls(model, tokenizer, offset, scale, batch_size, max_length)

    @property
    def n_heads(self) -> int:
        return int(self.model.config.num_labels)

    def raw_scores(self, prompts: Sequence, responses: Sequence):
        """Unnormalised head outputs, a float32 CPU tensor (N, H), in input order."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.raw_scores_of_ids(self.encode_pairs(prompts, responses))

    def encode_pairs(self, prompts: Sequence, responses: Sequence) -> list[list[int]]:
        return [encode(self.tokenizer, p, r, self.max_length) for p, r in zip(prompts, responses)]

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Rendered prompt + response texts (see encoding.encode_text), as OpenRLHF sends them."""
        return [encode_text(self.tokenizer, t, self.max_length) for t in texts]

    def raw_scores_of_ids(self, ids: list[list[int]]):
        """The batched forward: (N, H) float32 on the CPU, in input order, from token ids."""
        import torch

        if len(ids) == 0:
            return torch.zeros((0, self.n_heads))
        # Longest first: similar lengths share a batch (little padding) and an OOM shows up at once.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = torch.empty((len(ids), self.n_heads), dtype=torch.float32)  # (N, H)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), self.batch_size):
                    batch = order[start:start + self.batch_size]
                    input_ids, attention_mask = pad_right([ids[i] for i in batch], self.tokenizer.pad_token_id)
                    logits = self.model(input_ids=input_ids.to(self.device),
                                        attention_mask=attention_mask.to(self.device), use_cache=False).logits  # (B, H)
                    out[batch] = logits.float().cpu()
        finally:
            self.model.train(was_training)
        return out

    def normalise(self, raw):
        """(raw - offset) / scale per head, (N, H)."""
        return (raw - self.offset) / self.scale

    def head_scores(self, prompts: Sequence, responses: Sequence):
        """Normalised reward of every head, (N, H)."""
        return self.normalise(self.raw_scores(prompts, responses))

    def score(self, prompts: Sequence, responses: Sequence) -> list[float]:
        """Normalised reward per (prompt, response); the ensemble mean when there are several heads."""
        return self.head_scores(prompts, responses).mean(dim=1).tolist()

    def score_with_std(self, prompts: Sequence, responses: Sequence) -> tuple[list[float], list[float]]:
        """(mean, std) across heads of the normalised rewards; std is 0 for a single head."""
        return ensemble(self.head_scores(prompts, responses))

    __call__ = score

    def fit_normalisation(self, prompts: Sequence, responses: Sequence) -> tuple[list[float], list[float]]:
        """Set offset/scale per head so that this reference sample scores mean 0, std 1."""
        raw = self.raw_scores(prompts, responses)  # (N, H)
        if raw.shape[0] < 2:
            raise ValueError("normalisation needs at least 2 reference responses")
        self.offset = raw.mean(dim=0)
        self.scale = raw.std(dim=0, unbiased=False).clamp_min(1e-6)  # a constant head stays finite
        return self.offset.tolist(), self.scale.tolist()


def ensemble(heads) -> tuple[list[float], list[float]]:
    """(mean, std) across the heads of normalised rewards (N, H); std is 0 for a single head."""
    std = heads.std(dim=1, unbiased=False) if heads.shape[1] > 1 else heads.new_zeros(heads.shape[0])
    return heads.mean(dim=1).tolist(), std.tolist()


def check_reward_model(path) -> str:
    """The resolved path of a model with a reward head; anything else is refused with one line.

    A causal LM (e.g. the embedded smollm2-135m-instruct) would load with a freshly initialised,
    random head and score noise, so its config is read first and the model refused.
    """
    from prefloop.errors import InputError
    from prefloop.models import check_model

    resolved, config = check_model(str(path))
    architectures = config.architectures or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise InputError(f"{path}: not a reward model ({', '.join(architectures) or 'no architecture'} has no "
                         f"reward head); train one with `reward-model train`")
    return resolved


def load_reward(spec, device=None, batch_size: int = 16) -> RewardFn:
    """A reward callable `(prompts, responses) -> list[float]` from a model directory, "module:function"
    or the URL of a `reward-model serve` server (its token from $PREFLOOP_RM_TOKEN)."""
    from prefloop.errors import InputError

    if callable(spec):
        return spec
    spec = str(spec)
    if spec.startswith(("http://", "https://")):  # a `reward-model serve` server
        from reward_model.remote import RemoteRewardScorer

        return RemoteRewardScorer.connect(spec)
    if Path(spec).expanduser().exists() or ":" not in spec:
        return RewardScorer.from_pretrained(spec, device=device, batch_size=batch_size)
    from prefloop.gold import import_object

    fn = import_object(spec, "reward")
    if not callable(fn):
        raise InputError(f"reward {spec}: not callable")
    try:  # `os:getcwd` imports, but is no reward: say so now, not with a TypeError in the first batch
        inspect.signature(fn).bind([], [])
    except TypeError as err:
        raise InputError(f"reward {spec}: not a reward function (prompts, responses) -> scores ({err})") from None
    except ValueError:  # a builtin without a signature: the first call will tell
        pass
    return fn
