"""Test helpers for `align ppo`: a tiny letter-vocabulary model and rewards with known optima.

The letter model is a random 2-layer Llama whose vocabulary is a handful of special
tokens plus single letters, with a word-level tokenizer and a small chat template. With
so few actions a random policy explores them all, so PPO's behaviour can be checked
against closed forms in seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<user>", "<assistant>"]
LETTERS = list("abcdefgh")

# The bandit's known reward r(y) per single-token response; "" is what EOS/pad decode to.
BANDIT_REWARD = {"a": 1.0, "b": 0.5, "c": 0.0, "d": -0.5, "e": 0.25, "f": -1.0, "g": 0.0, "h": 0.75}

CHAT_TEMPLATE = ("{% for m in messages %}{{ '<' + m['role'] + '> ' + m['content'] + ' ' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<assistant> ' }}{% endif %}")


def build_letter_model(out_dir: str | Path, seed: int = 0, hidden_size: int = 32,
                       initializer_range: float = 0.02) -> Path:
    """A tiny Llama over the vocabulary SPECIALS + LETTERS (14 tokens), saved with its tokenizer.

    A large `initializer_range` makes the random reference policy far from uniform.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    vocab = {tok: i for i, tok in enumerate(SPECIALS + LETTERS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<bos>", unk_token="<unk>",
                                        additional_special_tokens=["<user>", "<assistant>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=128, tie_word_embeddings=False,
                         initializer_range=initializer_range, pad_token_id=vocab["<pad>"],
                         eos_token_id=vocab["<eos>"], bos_token_id=vocab["<bos>"])
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def bandit_reward(prompts, responses) -> list[float]:
    """r(y) from BANDIT_REWARD for a one-token response y (0 for EOS/pad, which decode to "")."""
    return [BANDIT_REWARD.get(r.strip(), 0.0) for r in responses]


def letter_a_reward(prompts, responses) -> list[float]:
    """Share of the response's words that are the letter 'a' (0 for an empty response)."""
    words = [r.split() for r in responses]
    return [sum(w == "a" for w in ws) / max(len(ws), 1) for ws in words]


def wrong_count_reward(prompts, responses) -> list[float]:
    """A broken reward function: one score too few."""
    return [0.0] * (len(responses) - 1)


def nan_reward(prompts, responses) -> list[float]:
    """A broken reward function: NaN for the first response (a scorer that divided by zero)."""
    return [float("nan")] + [0.0] * (len(responses) - 1)


def next_token_distribution(model_dir, prompt: str):
    """pi(. | prompt) at temperature 1 over the whole vocabulary, tokenized as `align ppo` does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from align.onpolicy.rollout import tokenize_prompts

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids, mask = tokenize_prompts(tokenizer, [prompt])
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits[0, -1]
    return torch.softmax(logits.double(), -1), tokenizer
