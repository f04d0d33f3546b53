"""The issue's must-show: a pairwise export from a populated store trains TRL's RewardTrainer and
DPOTrainer unchanged (loaded with `datasets`, passed straight in), and one step moves the parameters
and lowers the loss on the exported pairs.

The store (test_export.build_pairwise_store) has four annotators, overlap 3, a tie, a both_bad,
a split vote, a gold task and a low-gold annotator; ties are kept here so that the tie rows
(margin 0) go through TRL too.
"""

from __future__ import annotations

import pytest
import torch

from labeling.export import export_dataset
from labeling.export_files import write_export
from prefloop.hf import hardware_training_args
from export_store import build_pairwise_store  # the hand-checked store (tests/ is on sys.path)


@pytest.fixture
def exported(memory_engine, tmp_path):
    build_pairwise_store(memory_engine)
    splits, card = export_dataset(memory_engine, "p", ties="keep")
    assert len(splits["train"]) == 4 and any(row["tie"] for row in splits["train"])
    write_export(splits, tmp_path / "prefs_ds", card=card)
    write_export(splits, tmp_path / "prefs.jsonl", card=card)
    return tmp_path


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _assert_all_moved(before: dict, model) -> None:
    after = dict(model.named_parameters())
    unchanged = [name for name, p in before.items() if torch.equal(p, after[name].detach())]
    assert not unchanged, f"parameters did not move: {unchanged}"


def _common_args(tmp_path, name: str) -> dict:
    return dict(output_dir=str(tmp_path / name), max_steps=1, per_device_train_batch_size=4,
                per_device_eval_batch_size=4, learning_rate=1e-3, report_to=[], save_strategy="no",
                logging_steps=1, seed=0, **hardware_training_args())


def test_reward_trainer_trains_on_the_datasets_export(exported, tiny_model_dir):
    from datasets import load_from_disk
    from trl import RewardConfig, RewardTrainer

    torch.manual_seed(0)
    dataset = load_from_disk(str(exported / "prefs_ds"))
    assert "margin" in dataset.column_names
    trainer = RewardTrainer(model=tiny_model_dir, args=RewardConfig(**_common_args(exported, "rm")),
                            train_dataset=dataset, eval_dataset=dataset)
    loss_before = trainer.evaluate()["eval_loss"]
    before = _snapshot(trainer.model)
    trainer.train()
    _assert_all_moved(before, trainer.model)
    assert trainer.evaluate()["eval_loss"] < loss_before  # -log sigmoid(r_c - r_r - margin) went down


def test_dpo_trainer_trains_on_the_jsonl_export(exported, tiny_model_dir):
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    dataset = load_dataset("json", data_files=str(exported / "prefs.jsonl"), split="train")
    trainer = DPOTrainer(model=tiny_model_dir, args=DPOConfig(**_common_args(exported, "dpo"), max_length=256),
                         train_dataset=dataset, eval_dataset=dataset)
    loss_before = trainer.evaluate()["eval_loss"]
    assert loss_before == pytest.approx(0.6931, abs=1e-3)  # policy = reference: -log sigmoid(0) = log 2
    before = _snapshot(trainer.model)
    trainer.train()
    _assert_all_moved(before, trainer.model)
    assert trainer.evaluate()["eval_loss"] < loss_before
