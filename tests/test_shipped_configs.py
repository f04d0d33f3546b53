"""Shipped presets: reachable by name from any directory, parsed by their command, and reading the
files that `labeling export` writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.offline.dpo_config import DPOConfig
from align.offline.sft_config import SFTConfig
from align.onpolicy.grpo_config import GRPOConfig, RLOOConfig
from align.onpolicy.online_dpo_config import OnlineDPOConfig
from align.onpolicy.ppo_config import PPOConfig
from labeling.export_files import output_paths
from loop.round_config import RoundConfig
from prefloop.config import ConfigError, parse_config, shipped_configs
from reward_model.reward_config import RewardModelConfig

COMMANDS = {"dpo": DPOConfig, "dpo_online": OnlineDPOConfig, "ppo": PPOConfig, "sft": SFTConfig,
            "reward_model": RewardModelConfig, "grpo": GRPOConfig, "rloo": RLOOConfig}
PRESETS = {**COMMANDS, **{f"{name}_quick": cls for name, cls in COMMANDS.items()}, "round": RoundConfig, "round_demo": RoundConfig}
GRADER_MIXES = ["graders_example"]  # not a command's config: a grader mix (align/graders/mix.py)
# README: labeling export --format pairwise --test-fraction 0.1 --out runs/export/pairwise.jsonl
PAIRWISE_TRAIN, PAIRWISE_TEST = output_paths(Path("runs/export/pairwise.jsonl"), "jsonl", ["train", "test"])[0]
SFT_FILE = output_paths(Path("runs/export/sft.jsonl"), "jsonl", ["train"])[0][0]


def test_every_preset_is_shipped():
    assert sorted([*PRESETS, *GRADER_MIXES]) == shipped_configs()


@pytest.mark.parametrize("spelling", ["{}", "{}.yaml", "configs/{}.yaml"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_load_by_name_from_any_directory(name, spelling, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the repository root
    extra = ["--data", str(PAIRWISE_TRAIN)] if name.startswith("reward_model") else []
    cfg = parse_config(PRESETS[name], ["--config", spelling.format(name), *extra])
    assert isinstance(cfg, PRESETS[name])


def test_presets_read_what_the_export_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert PAIRWISE_TRAIN == Path("runs/export/pairwise.train.jsonl") and PAIRWISE_TEST.name == "pairwise.test.jsonl"
    assert Path(parse_config(DPOConfig, ["--config", "dpo"]).data) == PAIRWISE_TRAIN
    assert Path(parse_config(OnlineDPOConfig, ["--config", "dpo_online"]).prompts) == PAIRWISE_TRAIN
    assert Path(parse_config(PPOConfig, ["--config", "ppo"]).prompts) == PAIRWISE_TRAIN
    assert Path(parse_config(SFTConfig, ["--config", "sft"]).data) == SFT_FILE


def test_a_file_of_that_name_wins_over_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dpo.yaml").write_text("data: mine.jsonl\n")
    assert parse_config(DPOConfig, ["--config", "dpo.yaml"]).data == "mine.jsonl"


def test_unknown_config_names_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"nosuch: no such config file.*shipped: dpo, dpo_online, .*ppo, .*round"):
        parse_config(DPOConfig, ["--config", "nosuch"])
    with pytest.raises(ConfigError, match="elsewhere/dpo.yaml: no such config file"):
        parse_config(DPOConfig, ["--config", "elsewhere/dpo.yaml"])  # only configs/NAME.yaml is an alias


@pytest.mark.parametrize("text,message", [
    ("beta: .nan\n", "beta: expected a finite number"),
    ("max_length: twelve\n", "max_length: expected int"),
    ("lora: 3\n", "lora: expected bool"),
])
def test_yaml_values_are_type_checked(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        parse_config(DPOConfig, ["--config", str(tmp_path / "c.yaml")])


def test_the_presets_comments_name_presets_by_name_not_by_a_path():
    """A preset's head tells the user how to run it: `--config NAME`, the spelling that works from any
    directory (`configs/NAME.yaml` is no file in a checkout or an install)."""
    import re

    from prefloop.config import SHIPPED_CONFIGS

    for path in SHIPPED_CONFIGS.glob("*.yaml"):
        comments = "\n".join(line.partition("#")[2] for line in path.read_text().splitlines())
        assert "configs/" not in comments, path.name
        for name in re.findall(r"--config (\w[\w./-]*)", comments):
            assert name in shipped_configs(), (path.name, name)
