"""`--report-to`: W&B (offline) and MLflow (a local file store) get metrics.jsonl's names and values and the config.

The trackers' own files are read back here, not their Python APIs: W&B's offline run file (a LevelDB
log of protobuf records) and MLflow's file store (one text file per metric and per parameter).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from prefloop.config import ConfigError, parse_config
from prefloop.metrics import MetricsLogger, check_report_to, read_metrics

pytestmark = pytest.mark.usefixtures("tiny_cpu")


@pytest.fixture
def trackers_env(tmp_path, monkeypatch):
    """W&B offline under tmp/wandb-dir, MLflow's file store under tmp/mlruns; returns those two roots."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # W&B would wrap stdout, which pytest captures
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores unless asked
    (tmp_path / "wandb-dir").mkdir()
    return tmp_path / "wandb-dir", tmp_path / "mlruns"


# --- reading the trackers' files ----------------------------------------------------------------

def wandb_run(wandb_dir: Path) -> tuple[dict[int, dict], dict]:
    """({step: {name: value}}, config) of the one offline run under `wandb_dir`."""
    from wandb.proto import wandb_internal_pb2

    (path,) = list(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
    history: dict[int, dict] = {}
    config: dict = {}
    for record in _leveldb_records(path.read_bytes()):
        message = wandb_internal_pb2.Record()
        message.ParseFromString(record)
        kind = message.WhichOneof("record_type")
        if kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in message.history.item}
            step = history.setdefault(int(items["_step"]), {})
            step.update({k: v for k, v in items.items() if not k.startswith("_")})
        elif kind in ("run", "config"):
            updates = message.run.config.update if kind == "run" else message.config.update
            config.update({item.key: json.loads(item.value_json) for item in updates})
    return history, config


def _leveldb_records(data: bytes, block: int = 32768):
    """W&B's run file: a 7-byte header, then LevelDB log records (7-byte header: crc, length, type)."""
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL, FIRST | MIDDLE, LAST
        if kind in (1, 4):
            yield pending


def mlflow_run(root: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, str]]:
    """({name: [(step, value), ...]}, params) of the one run in MLflow's file store at `root`."""
    (run,) = [p for p in root.glob("*/*") if (p / "metrics").is_dir()]
    metrics = {}
    for file in (run / "metrics").rglob("*"):
        if file.is_file():
            rows = [line.split() for line in file.read_text().splitlines() if line.strip()]
            metrics[file.relative_to(run / "metrics").as_posix()] = [(int(s), float(v)) for _, v, s in rows]
    params = {f.relative_to(run / "params").as_posix(): f.read_text() for f in (run / "params").rglob("*")
              if f.is_file()}
    return metrics, params


def assert_same_metrics(jsonl_rows: list[dict], wandb_history: dict, mlflow_metrics: dict) -> int:
    """Every finite value of metrics.jsonl, by name and step, is in both trackers, and nothing else is."""
    expected = {(row["step"], k): v for row in jsonl_rows for k, v in row.items()
                if k not in ("step", "time") and v is not None and math.isfinite(v)}
    assert expected
    in_wandb = {(step, k): v for step, values in wandb_history.items() for k, v in values.items()}
    in_mlflow = {(step, k): v for k, points in mlflow_metrics.items() for step, v in points}
    for tracker in (in_wandb, in_mlflow):
        assert set(tracker) == set(expected)
        for key, value in expected.items():
            assert tracker[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    return len(expected)


# --- the tests ------------------------------------------------------------------------------------

def test_metrics_logger_feeds_both_trackers_what_metrics_jsonl_holds(tmp_path, trackers_env):
    wandb_dir, mlruns = trackers_env
    with MetricsLogger(tmp_path / "run", report_to=["wandb", "mlflow"], config={"beta": 0.1, "modules": ["q", "v"]},
                       run_name="unit") as logger:
        logger.log(1, {"loss": 0.75, "time/rollout": 1.5})
        logger.log(1, {"eval/reward": -0.25})  # an evaluation at the same step: one row, one tracker step
        logger.flush()  # a checkpoint writes the row; a later metric of the same step extends it
        logger.log(1, {"lr": 1e-5})
        logger.log(2, {"loss": 0.5, "missing": None, "diverged": float("nan")})  # no tracker takes these two
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["lr"] == 1e-5
    history, config = wandb_run(wandb_dir)
    metrics, params = mlflow_run(mlruns)
    assert assert_same_metrics(rows, history, metrics) == 5
    assert config["beta"] == 0.1 and json.loads(config["modules"]) == ["q", "v"]
    assert params["beta"] == "0.1" and json.loads(params["modules"]) == ["q", "v"]
    assert not (tmp_path / "run" / "tensorboard").exists()  # not named, not written


def test_align_sft_reports_to_wandb_mlflow_and_tensorboard(tiny_model_dir, tmp_path, trackers_env):
    from align.offline.sft_config import SFTConfig
    from align.offline.sft_trainer import train_sft
    from dpo_helpers import TOPICS, sft_row, write_jsonl

    wandb_dir, mlruns = trackers_env
    data = write_jsonl([sft_row(t) for t in TOPICS[:8]], tmp_path / "sft.train.jsonl")
    out = tmp_path / "sft"
    train_sft(parse_config(SFTConfig, ["--model", tiny_model_dir, "--data", str(data), "--output-dir", str(out),
                                       "--max-steps", "4", "--logging-steps", "1", "--save-steps", "4",
                                       "--max-length", "64", "--learning-rate", "1e-3",
                                       "--report-to", "wandb", "mlflow", "tensorboard"]))
    rows = read_metrics(out)
    history, config = wandb_run(wandb_dir)
    metrics, params = mlflow_run(mlruns)
    assert assert_same_metrics(rows, history, metrics) >= 8
    assert {"loss", "learning_rate"} <= {k for values in history.values() for k in values}
    assert config["command"] == "align sft" and config["learning_rate"] == 1e-3 and config["max_steps"] == 4
    assert params["command"] == "align sft" and float(params["learning_rate"]) == 1e-3
    assert (out / "tensorboard").is_dir()


def test_align_eval_reports_its_numbers(tiny_model_dir, tmp_path, trackers_env):
    from align.evaluation.evaluate import main

    _, mlruns = trackers_env
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me about topic {i}."}) + "\n" for i in range(3)))
    out = tmp_path / "eval"
    assert main(["--policies", tiny_model_dir, "--reference", tiny_model_dir, "--prompts", str(prompts),
                 "--reward-model", "reward_model.synthetic:true_reward_fn", "--best-of", "1", "2",
                 "--max-new-tokens", "4", "--output-dir", str(out), "--report-to", "mlflow"]) == 0
    report = json.loads((out / "eval.json").read_text())
    (row,) = read_metrics(out)
    assert row["eval/mean_reward"] == report["policies"][0]["mean_reward"]
    assert row["best_of_2/mean_reward"] == report["best_of_n"][1]["mean_reward"]
    assert row["eval/win_rate_reward"] == report["policies"][0]["win_rate_reward"]["rate"]
    metrics, params = mlflow_run(mlruns)
    assert {k: v[0][1] for k, v in metrics.items()} == pytest.approx(
        {k: v for k, v in row.items() if k not in ("step", "time")})
    assert params["command"] == "align eval" and params["max_new_tokens"] == "4"
    assert not (out / "tensorboard").exists()


def test_unknown_or_missing_trackers_are_refused_in_one_line(monkeypatch, tmp_path):
    import prefloop.metrics as metrics

    assert check_report_to(["none"]) == () and check_report_to(["wandb,mlflow"]) == ("wandb", "mlflow")
    with pytest.raises(ConfigError, match="unknown tracker 'comet'; choose from tensorboard, wandb, mlflow or none"):
        check_report_to(["comet"])
    # as on a machine without the extra installed: the package W&B's tracker needs is not importable
    monkeypatch.setitem(metrics.EXTRA_PACKAGES, "wandb", "wandb_is_not_installed_here")
    with pytest.raises(ConfigError, match=r"report_to: wandb is not installed; pip install 'prefloop\[wandb\]'"):
        check_report_to(["tensorboard", "wandb"])


def test_a_trainer_refuses_a_missing_tracker_before_writing_anything(monkeypatch, tmp_path, capsys):
    import prefloop.metrics as metrics
    from align.cli import main

    monkeypatch.setitem(metrics.EXTRA_PACKAGES, "mlflow", "mlflow_is_not_installed_here")
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "a"},
                                             {"role": "assistant", "content": "b"}]}) + "\n")
    assert main(["sft", "--data", str(data), "--output-dir", str(tmp_path / "out"), "--report-to", "mlflow"]) == 1
    assert capsys.readouterr().err.strip() == ("align: error: report_to: mlflow is not installed; "
                                               "pip install 'prefloop[mlflow]'")
    assert not (tmp_path / "out").exists()

