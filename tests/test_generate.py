"""`labeling generate`: batched sampling into the store, resumable, on a tiny model and on SmolLM2."""

from __future__ import annotations

import pytest
from sqlmodel import select

from labeling.db import session_scope
from labeling.generate import generate_candidates
from labeling.models import Candidate, Prompt
from labeling.projects import create_project
from prefloop.generation import SamplingConfig, generate_responses, tokenize_prompts

PROMPTS = ["What is 2+2?", "Name a colour.", "Say hello in French."]


def seed_prompts(engine, prompts=PROMPTS):
    with session_scope(engine) as s:
        project = create_project(s, "gen")
        for text in prompts:
            s.add(Prompt(project_id=project.id, messages=[{"role": "user", "content": text}]))


def candidates(engine):
    with session_scope(engine) as s:
        return s.exec(select(Candidate).order_by(Candidate.id)).all()


def test_tiny_model_generation_is_batched_and_resumable(memory_engine, tiny_model_dir):
    seed_prompts(memory_engine)
    cfg = SamplingConfig(max_new_tokens=6, temperature=1.0, seed=0)
    first = generate_candidates(memory_engine, "gen", tiny_model_dir, n=2, sampling=cfg, batch_size=4,
                                limit=2, progress=False)
    assert first.prompts_done == 2 and first.candidates_added >= 3
    rows = candidates(memory_engine)
    assert {c.model for c in rows} == {tiny_model_dir}
    assert all(c.gen_config["max_new_tokens"] == 6 and c.round == 0 for c in rows)
    # resume: prompts that already have their n candidates are skipped; the third one is done now
    second = generate_candidates(memory_engine, "gen", tiny_model_dir, n=2, sampling=cfg, batch_size=4, progress=False)
    assert second.prompts_skipped >= 1 and {c.prompt_id for c in candidates(memory_engine)} == {1, 2, 3}
    # a new round is generated afresh
    third = generate_candidates(memory_engine, "gen", tiny_model_dir, n=1, round=1, sampling=cfg, progress=False)
    assert third.prompts_done == 3


def test_responses_stop_at_eos_and_are_left_padded(tiny_model_dir):
    from prefloop.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model_dir)
    ids, mask = tokenize_prompts(tok, [[{"role": "user", "content": "a"}],
                                       [{"role": "user", "content": "a much longer prompt"}]])
    assert mask[0, 0] == 0 and mask[0, -1] == 1  # the short prompt is padded on the left
    out = generate_responses(model, tok, ["hi", "there"], max_new_tokens=5, temperature=1.0)
    assert out.response_ids.shape[0] == 2 and out.response_mask.shape == out.response_ids.shape
    for row, m in zip(out.response_ids, out.response_mask):
        eos = (row == tok.eos_token_id).nonzero()
        if len(eos):  # everything after the first EOS is masked out
            assert m[eos[0, 0] + 1:].sum() == 0 and m[eos[0, 0]] == 1


@pytest.mark.smollm2
def test_embedded_smollm2_generates_sensible_candidates(memory_engine, smollm2_dir):
    seed_prompts(memory_engine, ["What is the capital of France? Answer in one word."])
    report = generate_candidates(memory_engine, "gen", "smollm2-135m-instruct", n=2,
                                 sampling=SamplingConfig(max_new_tokens=12, temperature=0.3, seed=0), progress=False)
    texts = [c.text for c in candidates(memory_engine)]
    assert report.candidates_added >= 1 and any("Paris" in t for t in texts)
