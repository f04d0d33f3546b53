"""RewardScorer / load_reward: the API every downstream trainer scores through."""

from __future__ import annotations

import pytest
import torch

from reward_model.scorer import RewardScorer, load_reward
from reward_model.testing import REFERENCE_PROMPTS, REFERENCE_RESPONSES, build_tiny_reward_model


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory, smollm2_dir):
    return build_tiny_reward_model(tmp_path_factory.mktemp("rm") / "rm", seed=0)


@pytest.fixture(scope="module")
def scorer(tiny_rm_dir):
    return RewardScorer.from_pretrained(tiny_rm_dir, dtype=torch.float32, batch_size=3)


def test_normalised_on_reference_sample(scorer):
    # build_tiny_reward_model fits offset/scale on this sample: mean 0, std 1 there.
    scores = torch.tensor(scorer.score(REFERENCE_PROMPTS, REFERENCE_RESPONSES))
    assert scores.shape == (len(REFERENCE_PROMPTS),)
    assert abs(scores.mean().item()) < 1e-4
    assert scores.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_batching_and_sorting_do_not_change_scores(scorer):
    # Batches of 3, sorted by length, right-padded: each score equals scoring the pair alone.
    together = scorer.score(REFERENCE_PROMPTS, REFERENCE_RESPONSES)
    alone = [scorer.score([p], [r])[0] for p, r in zip(REFERENCE_PROMPTS, REFERENCE_RESPONSES)]
    assert together == pytest.approx(alone, abs=1e-4)
    reversed_scores = scorer.score(REFERENCE_PROMPTS[::-1], REFERENCE_RESPONSES[::-1])
    assert reversed_scores == pytest.approx(together[::-1], abs=1e-4)


def test_prompt_and_response_forms(scorer):
    # A plain-string prompt is one user turn; an export-style response list equals its string.
    conv = [[{"role": "user", "content": p}] for p in REFERENCE_PROMPTS[:3]]
    wrapped = [[{"role": "assistant", "content": r}] for r in REFERENCE_RESPONSES[:3]]
    plain = scorer.score(REFERENCE_PROMPTS[:3], REFERENCE_RESPONSES[:3])
    assert scorer.score(conv, wrapped) == pytest.approx(plain, abs=1e-5)
    assert scorer.score([], []) == []
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        scorer.score(["a", "b"], ["x"])


def test_single_head_std_is_zero(scorer):
    means, stds = scorer.score_with_std(REFERENCE_PROMPTS[:2], REFERENCE_RESPONSES[:2])
    assert stds == [0.0, 0.0]
    assert means == pytest.approx(scorer.score(REFERENCE_PROMPTS[:2], REFERENCE_RESPONSES[:2]), abs=1e-6)


def test_ensemble_mean_and_std_across_heads(tmp_path):
    rm = build_tiny_reward_model(tmp_path / "ens", seed=1, n_heads=3)
    scorer = RewardScorer.from_pretrained(rm, dtype=torch.float32)
    heads = scorer.head_scores(REFERENCE_PROMPTS, REFERENCE_RESPONSES)  # (N, 3)
    means, stds = scorer.score_with_std(REFERENCE_PROMPTS, REFERENCE_RESPONSES)
    # Hand-computed over the heads: mean and population std of each row.
    for row, m, s in zip(heads.tolist(), means, stds):
        mu = sum(row) / 3
        assert m == pytest.approx(mu, abs=1e-6)
        assert s == pytest.approx((sum((x - mu) ** 2 for x in row) / 3) ** 0.5, abs=1e-6)
    assert max(stds) > 0.1  # independently initialised heads disagree
    assert heads.mean(dim=0).tolist() == pytest.approx([0.0] * 3, abs=1e-4)  # each head normalised


def test_load_reward_specs(tiny_rm_dir):
    scorer = load_reward(str(tiny_rm_dir))
    assert isinstance(scorer, RewardScorer)
    fn = load_reward("reward_model.testing:length_reward")
    assert fn(["q", "q"], ["one two three", "one"]) == pytest.approx([0.3, 0.1])
    assert load_reward(fn) is fn


def test_bad_reward_specs_are_one_line_errors(tmp_path):
    from prefloop.errors import InputError
    from prefloop.models import ModelNotFoundError

    with pytest.raises(InputError, match="nonexistent_mod.*cannot import"):
        load_reward("nonexistent_mod:f")
    with pytest.raises(InputError, match="cannot import"):
        load_reward("reward_model.testing:no_such_function")
    with pytest.raises(ModelNotFoundError, match="no such directory"):
        load_reward(str(tmp_path / "missing-rm"))
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_reward(str(tmp_path))


def test_score_command_with_a_callable_reward_and_bad_rows(tmp_path, capsys):
    from prefloop.data import read_records, write_records
    from reward_model.cli import main as cli

    write_records([{"prompt": "hi", "response": "great kind"},
                   {"prompt": [{"role": "user", "content": "hi"}], "response": [{"role": "assistant", "content": "bad"}]}],
                  tmp_path / "in.jsonl")
    assert cli(["score", "--model", "reward_model.synthetic:true_reward_fn", "--input", str(tmp_path / "in.jsonl"),
                "--output", str(tmp_path / "out.jsonl")]) == 0
    assert [r["reward"] for r in read_records(tmp_path / "out.jsonl")] == [2.0, -1.0]  # +2 positive words, −1
    (tmp_path / "bad.jsonl").write_text('{"prompt": "hi", "response": "ok"}\n{"prompt": "hi"}\n')
    assert cli(["score", "--model", "reward_model.synthetic:true_reward_fn", "--input", str(tmp_path / "bad.jsonl"),
                "--output", str(tmp_path / "out2.jsonl")]) == 1
    assert "bad.jsonl: row 2: missing field 'response'" in capsys.readouterr().err
    assert not (tmp_path / "out2.jsonl").exists()  # nothing half-written
