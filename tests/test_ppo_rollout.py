"""align.onpolicy.rollout: sampling with the KV cache, EOS masks, and log-probs recomputed at the same temperature."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from align.onpolicy.rollout import (
    Rollout,
    generate_responses,
    response_logprobs,
    token_logprobs,
    tokenize_prompts,
)
from prefloop.generation import _mask_after_eos
from ppo_helpers import build_letter_model

PROMPTS = [[{"role": "user", "content": "a b"}], [{"role": "user", "content": "c d e f g h a b c"}], "q r"]


pytestmark = pytest.mark.usefixtures("tiny_cpu")  # fp32, one thread (conftest)


@pytest.fixture(scope="module")
def letter_model(tmp_path_factory):
    path = build_letter_model(tmp_path_factory.mktemp("letters") / "lm", initializer_range=0.3)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_mask_after_eos_keeps_the_first_eos_and_drops_the_rest():
    ids = torch.tensor([[5, 1, 7, 1], [5, 6, 7, 8], [1, 1, 1, 1]])
    mask, terminated = _mask_after_eos(ids, eos=[1])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert terminated.tolist() == [True, False, True]


def test_generate_responses_stops_at_eos_and_decodes(letter_model):
    model, tokenizer = letter_model
    torch.manual_seed(0)
    rollout = generate_responses(model, tokenizer, PROMPTS * 4, max_new_tokens=6, temperature=1.3)
    B, R = rollout.response_ids.shape
    assert B == 12 and R <= 6
    eos = tokenizer.eos_token_id
    for ids, mask, done, text in zip(rollout.response_ids.tolist(), rollout.response_mask.tolist(),
                                     rollout.terminated.tolist(), rollout.texts):
        n = sum(mask)
        assert mask == [1] * n + [0] * (R - n)
        assert done == (eos in ids[:n]) and (not done or ids[n - 1] == eos)
        assert all(t == tokenizer.pad_token_id for t in ids[n:])
        assert text == tokenizer.decode(ids[:n], skip_special_tokens=True)
    assert rollout.terminated.any() and (~rollout.terminated).any()  # this seed exercises both cases
    # Left padding: every prompt ends in the last prompt column.
    assert (rollout.prompt_mask[:, -1] == 1).all()


def test_recomputed_logprobs_equal_the_sampler_distribution_at_temperature(letter_model):
    model, tokenizer = letter_model
    temperature = 0.7
    ids, mask = tokenize_prompts(tokenizer, PROMPTS)
    config = GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=5,
                              min_new_tokens=5, pad_token_id=tokenizer.pad_token_id, eos_token_id=[],
                              output_scores=True, return_dict_in_generate=True)
    torch.manual_seed(1)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    response = out.sequences[:, ids.shape[1]:]
    # `scores` are the processed logits the sampler drew from: z / T.
    sampler_logprobs = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, response[..., None]).squeeze(-1)
    rollout = Rollout(ids, mask, response, torch.ones_like(response), torch.zeros(3, dtype=torch.bool), [""] * 3)
    torch.testing.assert_close(response_logprobs(model, rollout, temperature), sampler_logprobs,
                               atol=1e-5, rtol=0)
    # ... and at another temperature they differ: the temperature is really applied.
    assert not torch.allclose(response_logprobs(model, rollout, 1.0), sampler_logprobs, atol=1e-3)


def test_left_padding_does_not_change_logprobs(letter_model):
    model, tokenizer = letter_model
    torch.manual_seed(2)
    batch = generate_responses(model, tokenizer, PROMPTS, max_new_tokens=4, temperature=1.0)
    batched = response_logprobs(model, batch, 1.0)
    for i, prompt in enumerate(PROMPTS):
        ids, _ = tokenize_prompts(tokenizer, [prompt])
        full = torch.cat([ids, batch.response_ids[i: i + 1]], 1)
        with torch.no_grad():
            logits = model(full).logits[:, ids.shape[1] - 1: -1]  # unpadded, default positions
        alone = token_logprobs(logits, batch.response_ids[i: i + 1])[0] * batch.response_mask[i]
        torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=0)


def test_temperature_must_be_positive(letter_model):
    model, tokenizer = letter_model
    with pytest.raises(ValueError, match="temperature"):
        generate_responses(model, tokenizer, PROMPTS, max_new_tokens=2, temperature=0.0)


def test_the_log_prob_path_runs_attention_without_cudnn(letter_model):
    """On an H200 cuDNN's attention backward made the first PPO update's gradient NaN (align.onpolicy.rollout's
    attention_without_cudnn); the log-prob path leaves that kernel out while it runs, and only then."""
    model, tokenizer = letter_model
    seen = []
    attention = model.model.layers[0].self_attn
    handle = attention.register_forward_pre_hook(lambda *_: seen.append(torch.backends.cuda.cudnn_sdp_enabled()))
    try:
        rollout = generate_responses(model, tokenizer, PROMPTS, max_new_tokens=4, temperature=1.0)
        seen.clear()  # sampling is not backpropagated: any kernel will do
        before = torch.backends.cuda.cudnn_sdp_enabled()
        response_logprobs(model, rollout, temperature=1.0)
    finally:
        handle.remove()
    assert before and seen == [False]  # one forward, cuDNN off inside it
    assert torch.backends.cuda.cudnn_sdp_enabled()  # and back on after
