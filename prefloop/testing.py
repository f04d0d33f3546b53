"""Tiny randomly initialised models for tests and benchmarks (nothing is downloaded).

The tiny model shares the embedded SmolLM2 tokenizer (so chat templates and special
tokens are real) but has a few thousand times fewer parameters.
"""

from __future__ import annotations

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
