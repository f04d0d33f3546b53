"""A renamed field answers to its old name for one release: the old flag and the old YAML key (also in
`align round`'s sections) set the new field, with one notice line on stderr; `--help` lists both."""

from __future__ import annotations

import pytest

from loop.round_config import RoundConfig
from labeling.stats import StatsConfig
from prefloop.config import ConfigError, build_parser, field_aliases, parse_config


def test_the_new_flag_sets_the_field_without_a_notice(capsys):
    cfg = parse_config(StatsConfig, ["--store", "a.db", "--project", "p"], prog="labeling stats")
    assert cfg.store == "a.db"
    assert capsys.readouterr().err == ""


def test_the_old_flag_sets_the_field_and_warns_in_one_line(capsys):
    cfg = parse_config(StatsConfig, ["--db", "a.db", "--project", "p"], prog="labeling stats")
    assert cfg.store == "a.db"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--db is deprecated, use --store" in err


def test_help_lists_the_new_flag_and_the_old_one():
    text = " ".join(build_parser(StatsConfig, prog="labeling stats").format_help().split())
    assert "--store STORE the preference store" in text
    assert "--db STORE deprecated alias of --store" in text


def test_the_old_yaml_key_sets_the_field_and_warns(tmp_path, capsys):
    (tmp_path / "stats.yaml").write_text("db: a.db\nproject: p\n")
    cfg = parse_config(StatsConfig, ["--config", str(tmp_path / "stats.yaml")])
    assert cfg.store == "a.db"
    assert "db is deprecated, use store" in capsys.readouterr().err


def test_the_old_and_the_new_key_together_are_refused(tmp_path):
    (tmp_path / "stats.yaml").write_text("db: a.db\nstore: b.db\n")
    with pytest.raises(ConfigError, match="db and store are one field"):
        parse_config(StatsConfig, ["--config", str(tmp_path / "stats.yaml")])


def test_round_sections_take_the_old_names(capsys):
    """A round YAML written before the renames: `n: 2`, `evaluate: {samples_per_prompt: 2}`, `align: {ppo_epochs: 2}`."""
    cfg = parse_config(RoundConfig, ["--project", "p", "--judges", "people", "--eval-prompts", "x.jsonl", "--n", "3"])
    assert cfg.num_generations == 3
    cfg = RoundConfig(project="p", judges="people", eval_prompts="x.jsonl", algorithm="ppo",
                      evaluate={"samples_per_prompt": 2}, align={"ppo_epochs": 2})
    assert (cfg.evaluate, cfg.align) == ({"num_generations": 2}, {"num_iterations": 2})
    err = capsys.readouterr().err
    assert "evaluate: samples_per_prompt is deprecated" in err and "align: ppo_epochs is deprecated" in err


OLD_NAMES = [  # (config class, old name, new name): every rename of issue 21, while the old names last
    ("labeling.stats:StatsConfig", "db", "store"), ("labeling.commands:InitConfig", "db", "store"),
    ("labeling.serve:ServeConfig", "db", "store"), ("labeling.backup:BackupConfig", "db", "store"),
    ("labeling.export_files:ExportConfig", "db", "store"), ("labeling.leaderboard_config:LeaderboardConfig", "db", "store"),
    ("reward_model.active:PrioritizeConfig", "db", "store"), ("loop.round_config:RoundConfig", "db", "store"),
    ("align.onpolicy.ppo_config:PPOConfig", "ppo_epochs", "num_iterations"),
    ("align.onpolicy.online_dpo_config:OnlineDPOConfig", "updates_per_step", "num_iterations"),
    ("labeling.commands:GenerateConfig", "n", "num_generations"), ("labeling.demo:DemoConfig", "n", "num_generations"),
    ("loop.round_config:RoundConfig", "n", "num_generations"),
    ("align.evaluation.eval_config:EvalConfig", "samples_per_prompt", "num_generations"),
    ("labeling.commands:GenerateConfig", "limit", "max_prompts"), ("align.evaluation.eval_config:EvalConfig", "limit", "max_prompts"),
]


@pytest.mark.parametrize("target,old,new", OLD_NAMES, ids=[f"{t.split(':')[1]} {o}" for t, o, _ in OLD_NAMES])
def test_every_old_name_is_a_deprecated_alias_in_the_help(target, old, new):
    import importlib

    module, name = target.split(":")
    cls = getattr(importlib.import_module(module), name)
    assert field_aliases(cls)[old] == new
    text = " ".join(build_parser(cls).format_help().split())
    flags = f"--{old.replace('_', '-')} {new.upper()}" + (f", --{old} {new.upper()}" if "_" in old else "")
    assert f"{flags} deprecated alias of --{new.replace('_', '-')}" in text


def test_the_short_n_stays_without_a_notice(capsys):
    from labeling.commands import GenerateConfig

    cfg = parse_config(GenerateConfig, ["--project", "p", "-n", "3", "--limit", "5"], prog="labeling generate")
    assert (cfg.num_generations, cfg.max_prompts) == (3, 5)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--limit is deprecated, use --max-prompts" in err
