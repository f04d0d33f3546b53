"""`align grpo` and `align rloo` on a tiny letter model, through the command line: the graders' reward rises
over a short run, the run directory is the common layout, and a run resumes from its checkpoint."""

import json

import pytest

from align.cli import main as align_main
from align.onpolicy.grpo_config import GRPOConfig, RLOOConfig
from ppo_helpers import build_letter_model
from prefloop.metrics import read_metrics

# The task: answer with the letter b, three times. token_f1 gives partial credit for every b.
ROWS = [{"prompt": p, "reference": "b b b"} for p in ("a c", "c d", "e a", "d e")]


pytestmark = pytest.mark.usefixtures("tiny_cpu")  # fp32, one thread (conftest)


@pytest.fixture
def task(tmp_path):
    model_dir = build_letter_model(tmp_path / "lm", seed=1)
    data = tmp_path / "rft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return model_dir, data


def run(command, model_dir, data, out, *extra):
    return align_main([command, "--model", str(model_dir), "--prompts", str(data), "--graders", "token_f1",
                       "--output-dir", str(out), "--batch-size", "4", "--num-generations", "8",
                       "--max-new-tokens", "3", "--mini-batch-size", "16", "--learning-rate", "3e-3",
                       "--num-iterations", "2", "--sample-every", "0", "--save-steps", "1000", *extra])


@pytest.mark.parametrize("command, extra", [
    ("grpo", ["--beta", "0.02"]),
    ("grpo", ["--scale-rewards", "false", "--loss-type", "dr_grpo"]),
    ("rloo", []),
])
def test_the_graders_reward_rises_over_a_short_run(tmp_path, task, command, extra):
    model_dir, data = task
    out = tmp_path / "run"
    assert run(command, model_dir, data, out, "--max-steps", "25", *extra) == 0
    rows = read_metrics(out)
    first, last = (sum(r["reward"] for r in part) / 5 for part in (rows[:5], rows[-5:]))
    print(f"\n{command} {extra}: reward {first:.3f} -> {last:.3f}")
    assert last > first + 0.2
    assert {"reward", "grader/token_f1", "full_marks", "kl", "clip_ratio", "completions/mean_length",
            "frac_reward_zero_std", "loss"} <= set(rows[-1])
    assert rows[-1]["grader/token_f1"] == pytest.approx(rows[-1]["reward"])  # one grader, no length penalty
    assert (out / "final" / "config.json").exists() and (out / "reward.png").exists()
    record = json.loads((out / "run.json").read_text())
    assert record["command"] == f"align {command}" and record["status"] == "finished"


def test_a_run_resumes_from_its_checkpoint(tmp_path, task):
    model_dir, data = task
    out = tmp_path / "run"
    assert run("grpo", model_dir, data, out, "--max-steps", "4", "--save-steps", "2") == 0
    assert run("grpo", model_dir, data, out, "--max-steps", "6", "--save-steps", "2", "--resume") == 0
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4, 5, 6]


def test_bad_input_is_one_line_before_any_model_loads(tmp_path, task, capsys):
    model_dir, data = task
    assert align_main(["grpo", "--prompts", str(data), "--graders", "maths", "--output-dir",
                       str(tmp_path / "a")]) == 1
    assert "unknown grader 'maths'" in capsys.readouterr().err
    assert align_main(["grpo", "--prompts", str(data), "--output-dir", str(tmp_path / "b")]) == 1
    assert "row 1: field 'grader': missing" in capsys.readouterr().err


@pytest.mark.parametrize("fields, message", [
    ({}, "give exactly one data source: --prompts FILE"),
    ({"prompts": "x", "num_generations": 1}, "num_generations must be >= 2"),
    ({"prompts": "x", "batch_size": 3, "num_generations": 4, "mini_batch_size": 5}, "must divide"),
    ({"prompts": "x", "beta": -0.1}, "beta"),
    ({"prompts": "x", "loss_type": "mean"}, "loss_type"),
])
def test_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        GRPOConfig(**fields)


def test_help_imports_no_torch_and_loss_types_match_the_core():
    import subprocess
    import sys

    from align.onpolicy.grpo_config import LOSS_TYPES
    from align.onpolicy.grpo_core import AGGREGATIONS

    assert tuple(AGGREGATIONS) == LOSS_TYPES
    code = ("import sys, align.cli; align.cli.main(['grpo', '--help']); align.cli.main(['rloo', '--help']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--num-generations" in out and out.strip().splitlines()[-1] == "False"


def test_rloo_defaults_fold_the_kl_into_the_reward():
    cfg = RLOOConfig(prompts="x")
    assert cfg.algorithm == "rloo" and cfg.beta > 0 and cfg.loss_type == "sum" and cfg.reward_model == ""


def _algorithm(tmp_path, model_dir, data, **fields):
    """GRPO's algorithm, set up by the on-policy loop (engine, policy pair), without training."""
    from align.onpolicy.grpo_trainer import GroupRelative
    from align.onpolicy.loop import OnPolicyTrainer

    cfg = GRPOConfig(model=str(model_dir), prompts=str(data), graders="token_f1", output_dir=str(tmp_path / "out"),
                     batch_size=4, num_generations=8, max_new_tokens=3, learning_rate=3e-3, **fields)
    trainer = OnPolicyTrainer(cfg, GroupRelative(cfg))
    return trainer.algo, trainer.tasks


def test_one_minibatch_update_reuses_its_own_forward_as_pi_old(tmp_path, task):
    """mu = 1 and one minibatch: the update's detached log-probs stand in for the separate pi_old pass. The
    parameters after the update are those an explicit pi_old pass gives; beta = 0 loads no reference copy."""
    import torch

    from align.onpolicy.grpo_core import group_advantages

    model_dir, data = task
    algorithms = [_algorithm(tmp_path / str(i), model_dir, data, mini_batch_size=32, num_iterations=1)[0]
                  for i in range(2)]
    assert all(a.pair.ref_model is None for a in algorithms)  # beta = 0: pi_ref is never asked for
    examples = _algorithm(tmp_path / "e", model_dir, data, mini_batch_size=32)[1]
    torch.manual_seed(0)
    rollout = algorithms[0].pair.sample([e.prompt for e in examples], 8, 3, 1.0)
    scores = algorithms[0].score(0, examples, rollout).scores
    advantages = group_advantages(scores, 8)
    assert advantages.abs().sum() > 0  # something to learn from
    with torch.no_grad():
        old = algorithms[1].pair.logprobs(rollout, 1.0)
    policies = [a.engine.unwrapped.policy for a in algorithms]
    before = [p.detach().clone() for p in policies[0].parameters()]
    batch = {"rollout": rollout, "advantages": advantages, "step": 0, "stats": {}}
    reused = algorithms[0].update({**batch, "old_logprobs": None, "ref_logprobs": None})
    explicit = algorithms[1].update({**batch, "old_logprobs": old, "ref_logprobs": old})
    assert "kl" not in reused and "kl" not in explicit  # beta = 0: no reference to measure a KL against
    assert reused["loss"] == pytest.approx(explicit["loss"], abs=1e-6)
    for p, q, p0 in zip(policies[0].parameters(), policies[1].parameters(), before):
        torch.testing.assert_close(p, q)
    assert any(not torch.equal(p, p0) for p, p0 in zip(policies[0].parameters(), before))


def test_a_one_minibatch_run_learns_and_logs_kl_to_the_reference(tmp_path, task):
    """The reuse path end to end with beta > 0 (a reference is loaded, its KL logged from the update's forward)."""
    model_dir, data = task
    out = tmp_path / "run"
    assert run("grpo", model_dir, data, out, "--max-steps", "25", "--num-iterations", "1", "--mini-batch-size", "32",
               "--beta", "0.02") == 0
    rows = read_metrics(out)
    first, last = (sum(r["reward"] for r in part) / 5 for part in (rows[:5], rows[-5:]))
    assert last > first + 0.2
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rows[-1]["kl"] > 0  # drifts from pi_ref


def test_graders_by_a_shipped_mix_name_a_yaml_file_or_a_grader_name(tmp_path, task):
    """--graders takes a grader's name, a YAML mix, or a shipped mix by name (`graders_example`, as the
    presets are named): each row without graders of its own gets that mix."""
    from align.onpolicy.grpo_trainer import load_examples
    from prefloop.config import resolve_config

    model_dir, data = task
    mixes = {}
    for spec in ("graders_example", str(resolve_config("graders_example")), "token_f1"):
        examples, _, _ = load_examples(GRPOConfig(model=str(model_dir), prompts=str(data), graders=spec))
        mixes[spec] = [g.name for g in examples[0].graders]
    assert mixes["graders_example"] == mixes[str(resolve_config("graders_example"))] and len(mixes["graders_example"]) > 1
    assert mixes["token_f1"] == ["token_f1"]
