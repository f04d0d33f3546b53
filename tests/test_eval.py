"""`align eval` on cases with known answers: a policy that always says the gold-preferred thing
wins about 100 % of the time, the reference against itself wins half and has KL 0, and the
statistics match their closed forms."""

from __future__ import annotations

import json
import math

import pytest

from align.evaluation.evaluate import best_of_n_kl, expand_policies, main, wilson_interval, win_rate
from prefloop.errors import InputError

GOLD_ANSWER = "great helpful clear kind"  # positive_words = 4; a random model's text scores about 0


def test_wilson_interval_matches_the_textbook_value():
    lo, hi = wilson_interval(8, 10, 0.95)  # Wilson (1927); e.g. Newcombe 1998, table I
    assert (lo, hi) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0


def test_win_rate_counts_ties_half():
    w = win_rate([2, 1, 0, 5], [1, 1, 3, 5])
    assert (w["rate"], w["wins"], w["ties"], w["n"]) == (0.5, 1, 2, 4)


@pytest.mark.parametrize("n", [1, 2, 4, 16])
def test_best_of_n_kl_is_the_limit_of_the_exact_kl_on_a_fine_grid(n):
    """Best-of-N from M equally likely, distinct-reward outcomes puts (k/M)^N - ((k-1)/M)^N on the
    k-th best-ranked one; its KL to uniform tends to log N - (N-1)/N as M grows."""
    M = 200_000
    kl = 0.0
    for k in range(1, M + 1):
        q = (k / M) ** n - ((k - 1) / M) ** n
        if q > 0:
            kl += q * math.log(q * M)
    assert kl == pytest.approx(best_of_n_kl(n), abs=2e-3)


def test_run_directories_expand_to_checkpoints_then_final(tmp_path):
    """The run layout of prefloop.run: OUT/checkpoints/checkpoint-N/ (a model for SFT and DPO, optimizer
    state only for PPO and online DPO) and OUT/final/."""
    run = tmp_path / "run"
    for name in ("checkpoints/checkpoint-20", "checkpoints/checkpoint-100", "final", "checkpoints/checkpoint-5-junk"):
        (run / name).mkdir(parents=True)
        (run / name / "config.json").write_text("{}")
    (run / "checkpoints" / "checkpoint-50").mkdir()  # accelerate state, no model: not a policy
    (run / "checkpoints" / "checkpoint-50" / "trainer_state.json").write_text("{}")
    (run / "run.json").write_text('{"command": "align dpo"}')
    got = expand_policies([str(run), "some/model", str(run / "final"), str(run / "checkpoints" / "checkpoint-20")])
    assert [(label, step) for label, _, step in got] == [("run@20", 20), ("run@100", 100), ("run", None),
                                                         ("model", None), ("run", None), ("run@20", 20)]
    assert got[2][1] == str(run / "final")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(InputError, match="without a model yet"):
        expand_policies([str(tmp_path / "empty")])


def _train_to_say(model_dir: str, out_dir, prompts: list, answer: str, steps: int = 80):
    """Teach a tiny model to answer every prompt with `answer` (a few dozen Adam steps, until it all but always does)."""
    import torch

    from align.onpolicy.rollout import causal_lm_parts, response_hidden_states
    from prefloop.generation import tokenize_prompts
    from prefloop.models import load_causal_lm

    model, tok = load_causal_lm(model_dir, dtype=torch.float32, device="cpu")
    backbone, lm_head = causal_lm_parts(model)
    prompt_ids, prompt_mask = tokenize_prompts(tok, prompts)  # (B, P)
    target = torch.tensor(tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])  # (R,)
    target = target.expand(len(prompts), -1)  # (B, R)
    ids, mask = torch.cat([prompt_ids, target], 1), torch.cat([prompt_mask, torch.ones_like(target)], 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        # logits at the response positions only: the vocabulary is 49k wide
        logits = lm_head(response_hidden_states(backbone, ids, mask, prompt_ids.shape[1]))  # (B, R, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
        if loss.item() < 0.02:
            print(f"trained to say {answer!r} in {step} steps")
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, loss.item()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return str(out_dir)


def test_a_policy_that_always_gives_the_gold_answer_wins_about_always(tiny_model_dir, tmp_path, capsys):
    prompts = [[{"role": "user", "content": f"Tell me about topic {i}."}] for i in range(12)]
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    gold_policy = _train_to_say(tiny_model_dir, tmp_path / "gold-policy", prompts[:4], GOLD_ANSWER)
    out = tmp_path / "eval"
    assert main(["--policies", gold_policy, tiny_model_dir, "--reference", tiny_model_dir,
                 "--prompts", str(tmp_path / "heldout.jsonl"), "--num-generations", "2",
                 "--reward-model", "reward_model.synthetic:true_reward_fn", "--gold", "positive_words",
                 "--best-of", "1", "4", "--max-new-tokens", "8", "--output-dir", str(out)]) == 0
    table = capsys.readouterr().out
    assert "best-of-4" in table and "gold-policy" in table
    report = json.loads((out / "eval.json").read_text())
    good, same = report["policies"]
    assert good["win_rate_gold"]["rate"] >= 0.95 and good["win_rate_gold"]["lo"] > 0.8
    assert good["win_rate_gold"]["n"] == 24 and good["mean_gold"] == pytest.approx(4.0, abs=0.5)
    assert good["kl_per_sequence"] > 5 and good["example"] == GOLD_ANSWER
    # the reference judged against itself: no KL at all, and a win rate interval around one half
    assert same["kl_per_sequence"] == pytest.approx(0.0, abs=1e-4)
    assert same["win_rate_gold"]["lo"] <= 0.5 <= same["win_rate_gold"]["hi"]
    bon = {r["n"]: r for r in report["best_of_n"]}
    assert bon[1]["kl_per_sequence"] == 0.0 and bon[4]["kl_per_sequence"] == pytest.approx(math.log(4) - 0.75)
    assert bon[4]["mean_reward"] >= bon[1]["mean_reward"]  # picking by the reward model cannot lower it
    assert (out / "reward_vs_kl.png").read_bytes()[:4] == b"\x89PNG"
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 24 * (1 + 2 + 4)  # the reference, two policies, 4 best-of-N draws per sample
    assert_report_recomputes(report, samples)
    first = next(s for s in samples if s["kind"] == "policy" and s["policy"] == "gold-policy")
    assert first["response"] == GOLD_ANSWER and first["prompt"] == prompts[0]
    assert first["reference_response"] == samples[0]["response"] and samples[0]["kind"] == "reference"


def _counted_win_rate(values: list, baseline: list, confidence: float) -> dict:
    wins = sum(v > b for v, b in zip(values, baseline))
    ties = sum(v == b for v, b in zip(values, baseline))
    lo, hi = wilson_interval(wins + ties / 2, len(values), confidence)  # checked against the textbook above
    return {"rate": (wins + ties / 2) / len(values), "lo": lo, "hi": hi, "n": len(values), "wins": wins, "ties": ties}


def _judged(rows: list, baseline: list, confidence: float) -> dict:
    """Win rates against the reference rows and mean scores, per judge that scored them."""
    out = {}
    for judge in ("reward", "gold"):
        if rows[0][judge] is not None:
            values = [r[judge] for r in rows]
            out[f"win_rate_{judge}"] = _counted_win_rate(values, [b[judge] for b in baseline], confidence)
            out[f"mean_{judge}"] = sum(values) / len(values)
    return out


def assert_report_recomputes(report: dict, samples: list[dict]) -> None:
    """Rebuild eval.json from samples.jsonl alone (settings echoed from the report) and compare every field:
    a number added to eval.json without its sample records fails here."""
    ref = [s for s in samples if s["kind"] == "reference"]
    assert [s["sample"] for s in ref] == list(range(len(ref)))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    rebuilt = {k: report[k] for k in ("reference", "prompts", "temperature", "max_new_tokens", "confidence",
                                      "precision")}  # settings, not numbers
    rebuilt["samples"] = len(ref)
    rebuilt["reference_stats"] = {**{f"mean_{j}": mean([s[j] for s in ref]) for j in ("reward", "gold")
                                     if ref[0][j] is not None}, "length": mean([s["tokens"] for s in ref])}
    rebuilt["policies"] = []
    for row in report["policies"]:  # in the report's order; the label, path and step identify the rows
        rows = sorted((s for s in samples if s["kind"] == "policy" and s["policy"] == row["policy"]),
                      key=lambda s: s["sample"])
        assert [s["sample"] for s in rows] == list(range(len(ref)))
        assert [s["reference_response"] for s in rows] == [s["response"] for s in ref]
        kl = [s["logprob"] - s["reference_logprob"] for s in rows]  # k1, summed over the sequence
        rebuilt["policies"].append({"policy": row["policy"], "path": row["path"], "step": rows[0]["step"],
                                    **_judged(rows, ref, report["confidence"]), "kl_per_sequence": mean(kl),
                                    "kl_per_token": sum(kl) / sum(s["tokens"] for s in rows),
                                    "length": mean([s["tokens"] for s in rows]), "example": rows[0]["response"]})
    draws = [s for s in samples if s["kind"] == "best_of_n"]
    rebuilt["best_of_n"] = []
    for row in report["best_of_n"]:
        n = row["n"]
        picked = []
        for i in range(len(ref)):
            first_n = sorted((s for s in draws if s["sample"] == i and s["draw"] < n), key=lambda s: s["draw"])
            assert len(first_n) == n
            picked.append(max(first_n, key=lambda s: s["reward"]))  # max keeps the first of equal rewards
        length = mean([s["tokens"] for s in picked])
        rebuilt["best_of_n"].append({"n": n, "kl_per_sequence": math.log(n) - (n - 1) / n,
                                     "kl_per_token": (math.log(n) - (n - 1) / n) / length,
                                     **_judged(picked, ref, report["confidence"]), "length": length})
    _assert_same(rebuilt, report)


def _assert_same(rebuilt, report, where: str = "eval.json") -> None:
    """Equal structure, keys and values; floats to rounding (the sums may run in another order)."""
    if isinstance(report, dict):
        assert isinstance(rebuilt, dict) and rebuilt.keys() == report.keys(), (where, rebuilt.keys() ^ report.keys())
        for key in report:
            _assert_same(rebuilt[key], report[key], f"{where}.{key}")
    elif isinstance(report, list):
        assert isinstance(rebuilt, list) and len(rebuilt) == len(report), where
        for i, (a, b) in enumerate(zip(rebuilt, report)):
            _assert_same(a, b, f"{where}[{i}]")
    elif isinstance(report, float):
        assert rebuilt == pytest.approx(report, rel=1e-9, abs=1e-9), where
    else:
        assert rebuilt == report, where


def test_config_refuses_an_evaluation_without_a_judge_in_one_line():
    from prefloop.config import ConfigError, parse_config

    from align.evaluation.eval_config import EvalConfig

    with pytest.raises(ConfigError, match="nothing to judge with"):
        parse_config(EvalConfig, ["--policies", "p", "--prompts", "x.jsonl"])
    with pytest.raises(ConfigError, match="prompt file"):
        parse_config(EvalConfig, ["--policies", "p", "--gold", "concise"])
