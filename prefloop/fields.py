"""Config fields that several commands share, declared once: one name, one help, one default each.

    @dataclass
    class RewardModelConfig(RunFields, LoraFields, StoreFields): ...

  StoreFields       where a trainer reads its data from the preference store directly (store, project,
                    and the export's split: test_fraction, split_seed); the command checks the choice
                    between a file and the store with `check_store_source`
  LoraFields        a LoRA adapter (Hu et al. 2021) instead of all weights
  PolicyLoraFields  LoraFields, and whether the final policy has the adapter merged in
  RunFields         a run's seed, checkpoints kept, resume and trackers (prefloop.run's layout)
  store_field()     the store a labeling-side command opens (`--store`; `--db` is its old name)

`--help` lists a command's own fields first, then these groups (prefloop.config.help_order; a dataclass
itself lists its bases' fields first); a command redeclares a group's field only to give it another
default (`lora_target_modules` of `align ppo`).
"""

from __future__ import annotations

from dataclasses import dataclass

from prefloop.config import config_field as _f
from prefloop.metrics import report_to_field

STORE_HELP = "the preference store: SQLAlchemy URL or SQLite path (unset: $PREFLOOP_DB, else ./prefloop.db)"


def store_field(help_text: str = STORE_HELP):
    """The store a labeling-side command opens; `--db` / `db:` still mean it for one release."""
    return _f(None, help_text, aliases=("db",))


@dataclass
class StoreFields:
    """Read the training data from the store (a snapshot, recorded in the run) instead of an export file."""

    FIELD_GROUP = True  # prefloop.config.help_order lists these after the command's own

    store: str | None = _f(None, "read the preference store directly: SQLAlchemy URL or SQLite path (with "
                                 "--project), instead of an export file; the snapshot is recorded in the run")
    project: str | None = _f(None, "project in --store whose data to use")
    test_fraction: float = _f(0.0, "--store only: share of prompts held out, the same split by prompt as "
                                   "`labeling export --test-fraction` (held-out prompts never train)", range="[0, 1)")
    split_seed: int = _f(0, "--store only: the split's seed (`labeling export --seed`)", range="seed")

    def check_store_source(self, source: str, value, required: bool = True) -> None:
        """One data source: the file field `source` (its value `value`) or --store with --project; with
        `required` false, neither is left for the command to refuse when it needs the data."""
        from prefloop.data import check_test_fraction

        if (value is not None and self.store is not None) or (required and value is None and self.store is None):
            raise ValueError(f"give exactly one data source: --{source.replace('_', '-')} FILE, or --store URL "
                             "with --project")
        if self.store is not None and not self.project:
            raise ValueError("--store needs --project")
        check_test_fraction(self.test_fraction, self.store)


@dataclass
class LoraFields:
    """A LoRA adapter: W + (alpha / r) B A on the target modules, trained instead of W."""

    FIELD_GROUP = True  # prefloop.config.help_order lists these after the command's own

    lora: bool = _f(False, "train LoRA adapters (Hu et al. 2021) instead of all weights")
    lora_r: int = _f(16, "LoRA rank r", range=">= 1")
    lora_alpha: int = _f(32, "LoRA scaling alpha (the update is scaled by alpha / r)", range=">= 1")
    lora_dropout: float = _f(0.0, "dropout on the LoRA input (0 keeps a policy's log-probs deterministic)",
                             range="[0, 1)")
    lora_target_modules: list[str] = _f(["all-linear"], "modules that get an adapter ('all-linear': every linear "
                                                        "layer except the output head)")

    def lora_targets(self) -> str | list[str]:
        """`lora_target_modules` as peft's LoraConfig takes it: the string 'all-linear', else the list."""
        return "all-linear" if self.lora_target_modules == ["all-linear"] else self.lora_target_modules


@dataclass
class PolicyLoraFields(LoraFields):
    FIELD_GROUP = True

    merge_lora: bool = _f(True, "merge the adapter into the final model so plain transformers loads it; false "
                                "keeps an adapter directory")


@dataclass
class RunFields:
    """What every training run has (prefloop.run: output_dir/{final,checkpoints}/, metrics.jsonl, run.json)."""

    FIELD_GROUP = True  # prefloop.config.help_order lists these after the command's own

    seed: int = _f(0, "random seed of the run: data order, sampling, initialisation (LoRA, heads) and the "
                      "bootstrap", range="seed")
    save_total_limit: int = _f(2, "checkpoints kept in output_dir/checkpoints", range=">= 1")
    resume: bool = _f(False, "continue the run in output_dir from its last checkpoint (without it, an output_dir "
                             "holding a run is refused)")
    report_to: list[str] = report_to_field()
