"""Loading a backbone with a scalar (or ensemble) head: any model AutoModelForSequenceClassification knows."""

from __future__ import annotations


def load_backbone(name: str | None, n_heads: int = 1, seed: int = 0, dtype=None):
    """(model, tokenizer): `name` (decoder or encoder, a reward model or a plain LM) with `n_heads` linear heads.

    Weights load in fp32 unless `dtype` is given: they are the optimiser's master weights, and
    the Trainer autocasts to the hardware's precision (bf16 where the device has it).
    The new head is drawn after `torch.manual_seed(seed)`, so runs are reproducible. A causal
    LM's `lm_head` is dropped and `score` is new: the expected cross-architecture warnings are
    silenced with TRL's own context manager.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    from prefloop.models import ModelNotFoundError, resolve_model

    path = resolve_model(name)
    torch.manual_seed(seed)
    try:
        with suppress_seqcls_warning():
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=n_heads, dtype=dtype or torch.float32, ignore_mismatched_sizes=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(f"model {name}: cannot be loaded as a reward backbone "
                                 f"({str(err).splitlines()[0]})") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
