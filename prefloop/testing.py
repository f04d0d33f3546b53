"""Tiny randomly initialised models for tests and benchmarks (nothing is downloaded).

The tiny model shares the embedded SmolLM2 tokenizer (so chat templates and special
tokens are real) but has a few thousand times fewer parameters.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


def build_tiny_causal_lm(out_dir: str | Path, seed: int = 0, hidden_size: int = 64,
                         num_layers: int = 2, num_heads: int = 4) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prefloop.models import load_tokenizer

    out_dir = Path(out_dir)
    tokenizer = load_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@contextmanager
def tiny_cpu_settings():
    """fp32 and one CPU thread while a test trains a tiny model.

    fp32: the tests check numbers against closed forms, independent of whether this CPU
    advertises bf16. One thread: matrices of a few dozen columns gain nothing from more,
    and on a busy machine extra OpenMP threads spin against each other (measured: 15x slower).
    """
    import torch

    from prefloop import hardware

    threads, old_env = torch.get_num_threads(), os.environ.get("PREFLOOP_CPU_BF16")
    os.environ["PREFLOOP_CPU_BF16"] = "0"
    hardware.detect.cache_clear()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if old_env is None:
            os.environ.pop("PREFLOOP_CPU_BF16", None)
        else:
            os.environ["PREFLOOP_CPU_BF16"] = old_env
        hardware.detect.cache_clear()
