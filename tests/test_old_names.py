"""A renamed field answers to its old name for one release: the old flag and the old YAML key (also in
`align round`'s sections) set the new field, with one notice line on stderr; `--help` lists both."""

from __future__ import annotations

import pytest

from align.round_config import RoundConfig
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
    """`evaluate: {samples_per_prompt: 2}` in a round YAML written before the rename still means num_generations."""
    old = {"evaluate": {"samples_per_prompt": 2}} if "samples_per_prompt" in _eval_aliases() else {}
    cfg = RoundConfig(project="p", judges="people", eval_prompts="x.jsonl", **old)
    if old:
        assert cfg.evaluate == {"num_generations": 2}
        assert "evaluate: samples_per_prompt is deprecated" in capsys.readouterr().err


def _eval_aliases():
    from align.eval_config import EvalConfig

    return field_aliases(EvalConfig)
