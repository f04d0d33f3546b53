"""Tiny models for tests and benchmarks (nothing is downloaded): randomly initialised, or taught a small
vocabulary in a few steps (`teach_tiny_causal_lm`).

The tiny model shares the embedded SmolLM2 tokenizer (so chat templates and special
tokens are real) but has a few thousand times fewer parameters.
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

# Debian's Chromium, which Playwright drives without downloading a browser of its own: the browser tests
# (tests/browser_helpers.py) and the docs' screenshots (docs/make_pictures.py).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


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


def teach_tiny_causal_lm(model_dir: str | Path, out_dir: str | Path, prompts: list[str],
                         respond: Callable[[random.Random], str], steps: int = 20, batch_size: int = 16,
                         learning_rate: float = 1e-2, seed: int = 0) -> Path:
    """A tiny model taught, by a few steps of next-token cross-entropy on the responses only, to answer
    each prompt (a user turn) with text drawn by `respond(rng)`; saved to `out_dir`.

    Why: a randomly initialised model samples near-uniform tokens from a 49k vocabulary, so no preference
    over its outputs is learnable from a few dozen comparisons. Taught a small vocabulary (say, words of
    which some are good and some bad), its answers differ in ways a gold reward can score and that DPO
    can shift in seconds: the loop's tests then measure learning, not noise. No end-of-sequence is taught,
    so every answer runs to `max_new_tokens` (never empty). Logits are computed at the response positions
    only: the prompts (with the chat template's system turn) are most of each sequence.
    """
    import torch
    import torch.nn.functional as F

    from prefloop.models import load_causal_lm

    model, tokenizer = load_causal_lm(str(model_dir))
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    for _ in range(steps):
        sequences, starts = [], []
        for _ in range(batch_size):
            chat = [{"role": "user", "content": rng.choice(prompts)}]
            prompt = list(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                        return_dict=True)["input_ids"])
            sequences.append(prompt + tokenizer(respond(rng), add_special_tokens=False)["input_ids"])
            starts.append(len(prompt))
        width = max(map(len, sequences))
        ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in sequences])  # (B, T)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])  # (B, T)
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, D)
        # position t predicts token t + 1: the positions from the last prompt token to the one before the end
        rows, cols = zip(*[(i, t) for i, s in enumerate(sequences) for t in range(starts[i] - 1, len(s) - 1)])
        targets = ids[list(rows), [c + 1 for c in cols]]  # (N,)
        loss = F.cross_entropy(model.lm_head(hidden[list(rows), list(cols)]), targets)  # logits (N, V)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    out_dir = Path(out_dir)
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
