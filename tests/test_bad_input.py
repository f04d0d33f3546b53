"""Bad input, command by command: one clear stderr line, a non-zero exit, no traceback, nothing changed.

Every case runs a real command on a copy of one small workspace (a store with a project,
users, prompts, candidates and tasks; tiny models; good and bad data files) and compares
a digest of the workspace (files, and the rows of every SQLite store) before and after.
Most cases call each tool's `main(argv)` in-process (capfd sees the real stderr, fd-level);
`labeling serve` and non-UTF-8 command-line bytes run as subprocesses, as a user runs them.

A failing case starts with its category: TRACEBACK, ACCEPTED (exit 0), CHANGED (state),
NOT-ONE-LINE, or UNCLEAR (the line does not name what is wrong), so `pytest -rf` counts them.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from state_helpers import tree_digest

from prefloop.net import free_port

BIN = Path(sys.executable).parent
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
LATIN1 = b'{"prompt": "caf\xe9 au lait?", "chosen": "yes", "rejected": "no", "response": "ok"}\n'
PG_DOWN = "postgresql+psycopg://user:pw@127.0.0.1:1/prefloop"  # nothing listens on port 1


@dataclass(frozen=True)
class Case:
    tool: str                 # labeling | reward-model | align
    argv: tuple[str, ...]     # {lm}, {rm}, {port} are filled in at run time
    expect: str               # the error line must name this (case-insensitive)
    stdin: bytes | None = None
    subprocess: bool = False  # needed for serve (it would block) and non-UTF-8 argv bytes


def case(tool, argv: str | list, expect, **kw) -> Case:
    return Case(tool, tuple(argv.split() if isinstance(argv, str) else argv), expect, **kw)


# --- the cases -----------------------------------------------------------------------------

BAD_DBS = {  # name -> (--store value, what the line must name)
    "missing-dir": ("nodir/store.db", "nodir"),
    "mistyped": ("stroe.db", "stroe.db"),
    "not-a-store": ("notstore.db", "notstore.db"),
    "png-as-db": ("png.db", "png.db"),
    "newer-schema": ("newer.db", "newer"),
    "postgres-down": (PG_DOWN, "127.0.0.1"),
}
DB_COMMANDS = {  # every command that reads a store, with otherwise valid arguments
    "labeling users list": ("labeling", "users list"),
    "labeling users add": ("labeling", "users add carol --password a-long-password"),
    "labeling import": ("labeling", "import --project chat --file prompts.jsonl"),
    "labeling generate": ("labeling", "generate --project chat --models {lm} -n 1 --max-new-tokens 2"),
    "labeling tasks": ("labeling", "tasks build --project chat"),
    "labeling export": ("labeling", "export --project chat --out out.jsonl"),
    "labeling stats": ("labeling", "stats --project chat"),
    "labeling leaderboard": ("labeling", "leaderboard --project chat"),
    "reward-model prioritize": ("reward-model", "prioritize --model {rm} --project chat"),
    "align round": ("align", "round --project chat --judges people --eval-prompts prompts.jsonl"),
}
CASES: dict[str, Case] = {}
for command, (tool, args) in DB_COMMANDS.items():
    for db_name, (db, expect) in BAD_DBS.items():
        CASES[f"{command} --store {db_name}"] = case(tool, f"{args} --store {db}", expect)
for db_name, (db, expect) in BAD_DBS.items():
    if db_name != "mistyped":  # init creates a store wherever it is told to
        CASES[f"labeling init --store {db_name}"] = case("labeling", f"init --project new --store {db}", expect)
    CASES[f"labeling serve --store {db_name}"] = case("labeling", f"serve --port {{port}} --store {db}", expect,
                                                    subprocess=True)
    CASES[f"align eval --store {db_name}"] = case(
        "align", f"eval --policies {{lm}} --reference {{lm}} --gold concise --store {db} --project chat", expect)
    CASES[f"align ppo --store {db_name}"] = case(
        "align", f"ppo --model {{lm}} --reward-model {{rm}} --store {db} --project chat --max-steps 1", expect)

BAD_FILES = {  # name -> (file, what the line must name)
    "missing": ("nope.jsonl", "nope.jsonl"),
    "png": ("png.jsonl", "png.jsonl"),
    "non-utf8": ("latin1.jsonl", "latin1.jsonl"),
    "empty": ("empty.jsonl", "empty.jsonl"),
    "missing-column": ("nocol.jsonl", "nocol.jsonl"),
}
EVAL_QUICK = "--gold concise --best-of 1 --max-new-tokens 2 --output-dir evalout"
FILE_COMMANDS = {  # command -> (tool, args with {f} for the file)
    "labeling import": ("labeling", "import --store store.db --project chat --file {f}"),
    "reward-model train": ("reward-model", "train --model {lm} --data {f} --max-steps 1"),
    "reward-model eval": ("reward-model", "eval --model {rm} --data {f}"),
    "reward-model score": ("reward-model", "score --model {rm} --input {f} --output scored.jsonl"),
    "align sft": ("align", "sft --model {lm} --data {f} --max-steps 1"),
    "align dpo": ("align", "dpo --model {lm} --data {f} --max-steps 1"),
    "align online-dpo": ("align", "online-dpo --reward-model {rm} --model {lm} --prompts {f} --max-steps 1"),
    "align ppo": ("align", "ppo --model {lm} --reward-model {rm} --prompts {f} --max-steps 1"),
    "align eval": ("align", f"eval --policies {{lm}} --reference {{lm}} --prompts {{f}} {EVAL_QUICK}"),
    "align round --eval-prompts": ("align", "round --store store.db --project chat --judges people --eval-prompts {f}"),
    "align round --prompts": ("align", "round --store store.db --project chat --judges people "
                                       "--eval-prompts prompts.jsonl --prompts {f}"),
}
for command, (tool, args) in FILE_COMMANDS.items():
    for file_name, (path, expect) in BAD_FILES.items():
        CASES[f"{command} {file_name} file"] = case(tool, args.replace("{f}", path), expect)
CASES["labeling import csv non-utf8"] = case("labeling", "import --store store.db --project chat --file latin1.csv",
                                             "latin1.csv")
CASES["labeling import png parquet"] = case("labeling", "import --store store.db --project chat --file png.parquet",
                                            "png.parquet")

CONFIG_TOOLS = {"labeling init": ("labeling", "init --store store.db"),
                "labeling import": ("labeling", "import --store store.db"),
                "labeling export": ("labeling", "export --store store.db"),
                "labeling serve": ("labeling", "serve --store store.db --port {port}"),
                "reward-model train": ("reward-model", "train"),
                "align sft": ("align", "sft"), "align dpo": ("align", "dpo"), "align ppo": ("align", "ppo"),
                "align eval": ("align", "eval"), "align round": ("align", "round"),
                "labeling simulate": ("labeling", "simulate"), "labeling leaderboard": ("labeling", "leaderboard")}
for command, (tool, args) in CONFIG_TOOLS.items():
    sub = command == "labeling serve"
    CASES[f"{command} --config non-utf8"] = case(tool, f"{args} --config latin1.yaml", "latin1.yaml", subprocess=sub)
    CASES[f"{command} --config missing"] = case(tool, f"{args} --config nope.yaml", "nope.yaml", subprocess=sub)
    CASES[f"{command} --config png"] = case(tool, f"{args} --config png.yaml", "png.yaml", subprocess=sub)

NUMBERS = ["0", "-1", "nan", "inf"]
NUMBER_FLAGS = {  # (command, flag) -> (tool, args); every value in NUMBERS is out of range for these
    ("labeling tasks", "--pairs-per-prompt"): ("labeling", "tasks build --store store.db --project chat"),
    ("labeling tasks", "--k"): ("labeling", "tasks build --store store.db --project chat --strategy ranking"),
    ("labeling init", "--k"): ("labeling", "init --store store.db --project new --mode ranking"),
    ("labeling init", "--overlap"): ("labeling", "init --store store.db --project new"),
    ("labeling generate", "--num-generations"): ("labeling", "generate --store store.db --project chat --models {lm}"),
    ("labeling generate", "--max-new-tokens"): ("labeling", "generate --store store.db --project chat --models {lm}"),
    ("reward-model train", "--max-steps"): ("reward-model", "train --model {lm} --data pairs.jsonl"),
    ("align sft", "--max-steps"): ("align", "sft --model {lm} --data sft.jsonl"),
    ("align dpo", "--max-steps"): ("align", "dpo --model {lm} --data pairs.jsonl"),
    ("align ppo", "--max-steps"): ("align", "ppo --model {lm} --reward-model {rm} --prompts prompts.jsonl"),
    ("align eval", "--num-generations"): ("align", "eval --policies {lm} --reference {lm} --prompts prompts.jsonl "
                                                      "--gold concise"),
    ("align eval", "--max-new-tokens"): ("align", "eval --policies {lm} --reference {lm} --prompts prompts.jsonl "
                                                  "--gold concise"),
    ("align round", "--pairs-per-prompt"): ("align", "round --store store.db --project chat --judges people "
                                                     "--eval-prompts prompts.jsonl"),
    ("labeling leaderboard", "--confidence"): ("labeling", "leaderboard --store store.db --project chat"),
}
for (command, flag), (tool, args) in NUMBER_FLAGS.items():
    for value in NUMBERS:  # --max-steps -1 too: unset means "train num_train_epochs", -1 means nothing
        CASES[f"{command} {flag} {value}"] = case(tool, f"{args} {flag} {value}", flag.lstrip("-").replace("-", "_"))
for value in ["-1", "nan", "inf"]:  # 0 is a valid round and priority
    CASES[f"labeling tasks --round {value}"] = case("labeling", f"tasks build --store store.db --project chat "
                                                                f"--round {value}", "round")
    CASES[f"labeling generate --round {value}"] = case("labeling", f"generate --store store.db --project chat "
                                                                   f"--models {{lm}} --round {value}", "round")
for value in ["nan", "inf", "-inf"]:
    CASES[f"labeling tasks --priority {value}"] = case("labeling", f"tasks build --store store.db --project chat "
                                                                   f"--priority {value}", "priority")
for value in ["nan", "-0.1", "1"]:
    CASES[f"labeling export --test-fraction {value}"] = case(
        "labeling", f"export --store store.db --project chat --out out.jsonl --test-fraction {value}", "test_fraction")
CASES["labeling init --gold-rate nan"] = case("labeling", "init --store store.db --project new --gold-rate nan",
                                              "gold_rate")
CASES["labeling init --gold-rate 1.5"] = case("labeling", "init --store store.db --project new --gold-rate 1.5",
                                              "gold_rate")
CASES["labeling init --lease-seconds 0"] = case("labeling", "init --store store.db --project new --lease-seconds 0",
                                                "lease_seconds")
CASES["labeling generate --temperature nan"] = case(
    "labeling", "generate --store store.db --project chat --models {lm} --temperature nan", "temperature")
CASES["labeling serve --port -1"] = case("labeling", "serve --store store.db --port -1", "port", subprocess=True)
CASES["labeling serve --port 70000"] = case("labeling", "serve --store store.db --port 70000", "port", subprocess=True)
CASES["labeling serve --port in use"] = case("labeling", "serve --store store.db --port {busy}", "in use", subprocess=True)
CASES["reward-model eval --bins 0"] = case("reward-model", "eval --model {rm} --data pairs.jsonl --bins 0", "bins")
CASES["reward-model prioritize --batch-size 0"] = case(
    "reward-model", "prioritize --store store.db --model {rm} --project chat --batch-size 0", "batch_size")

EVAL = f"eval --policies {{lm}} --reference {{lm}} --prompts prompts.jsonl {EVAL_QUICK}"
RANGES = {  # (command, flag) -> (tool, args, values out of range): each field's declared range (prefloop.config)
    ("align eval", "--max-prompts"): ("align", EVAL, ["0", "-1"]),
    ("align eval", "--batch-size"): ("align", EVAL, ["0"]),
    ("align eval", "--best-of"): ("align", "eval --policies {lm} --reference {lm} --prompts prompts.jsonl "
                                           "--gold concise", ["0"]),
    ("align dpo", "--beta"): ("align", "dpo --model {lm} --data pairs.jsonl", ["0", "-0.1"]),
    ("align dpo", "--label-smoothing"): ("align", "dpo --model {lm} --data pairs.jsonl --loss-type robust",
                                         ["0.5", "-1"]),
    ("align sft", "--num-train-epochs"): ("align", "sft --model {lm} --data sft.jsonl", ["0"]),
    ("align sft", "--seed"): ("align", "sft --model {lm} --data sft.jsonl", ["-1"]),
    ("align sft", "--warmup-steps"): ("align", "sft --model {lm} --data sft.jsonl", ["-1"]),
    ("align grpo", "--num-generations"): ("align", "grpo --model {lm} --prompts rft.jsonl", ["1"]),
    ("align grpo", "--max-steps"): ("align", "grpo --model {lm} --prompts rft.jsonl", ["0", "-1"]),
    ("align rloo", "--beta"): ("align", "rloo --model {lm} --prompts rft.jsonl", ["-1"]),
    ("align ppo", "--gamma"): ("align", "ppo --model {lm} --reward-model {rm} --prompts prompts.jsonl", ["1.5"]),
    ("align ppo", "--lora-dropout"): ("align", "ppo --model {lm} --reward-model {rm} --prompts prompts.jsonl", ["1"]),
    ("align ppo", "--max-prompts"): ("align", "ppo --model {lm} --reward-model {rm} --prompts prompts.jsonl", ["0"]),
    ("align online-dpo", "--num-generations"): ("align", "online-dpo --model {lm} --reward-model {rm} "
                                                         "--prompts prompts.jsonl", ["1"]),
    ("align round", "--temperature"): ("align", "round --store store.db --project chat --judges people "
                                                "--eval-prompts prompts.jsonl", ["0"]),
    ("align round", "--poll-seconds"): ("align", "round --store store.db --project chat --judges people "
                                                 "--eval-prompts prompts.jsonl", ["0", "-1"]),
    ("reward-model train", "--learning-rate"): ("reward-model", "train --model {lm} --data pairs.jsonl", ["0"]),
    ("reward-model train", "--normalize-samples"): ("reward-model", "train --model {lm} --data pairs.jsonl", ["1"]),
    ("reward-model score", "--batch-size"): ("reward-model", "score --model {rm} --input score.jsonl "
                                                             "--output scored.jsonl", ["0"]),
    ("labeling generate", "--top-p"): ("labeling", "generate --store store.db --project chat --models {lm}", ["0", "1.5"]),
    ("labeling leaderboard", "--seed"): ("labeling", "leaderboard --store store.db --project chat", ["-1"]),
    ("labeling export", "--until-judgment-id"): ("labeling", "export --store store.db --project chat --out out.jsonl",
                                                 ["-1"]),
}
for (command, flag), (tool, args, values) in RANGES.items():
    for value in values:
        CASES[f"{command} {flag} {value}"] = case(tool, f"{args} {flag} {value}", flag.lstrip("-").replace("-", "_"))

ROUND = "round --store store.db --project chat --judges people --eval-prompts prompts.jsonl"
OUTPUTS = {  # nothing a command did not create is overwritten (prefloop.outputs); inputs checked before any work
    "reward-model score --output existing file": ("reward-model", "score --model {rm} --input score.jsonl "
                                                                  "--output pairs.jsonl", "--overwrite"),
    "reward-model score --output is the input": ("reward-model", "score --model {rm} --input score.jsonl "
                                                                 "--output score.jsonl", "input"),
    "reward-model score --output is the input --overwrite": ("reward-model", "score --model {rm} --input score.jsonl "
                                                                             "--output ./score.jsonl --overwrite",
                                                             "input"),
    "reward-model score --output existing dir": ("reward-model", "score --model {rm} --input score.jsonl "
                                                                 "--output mydir", "mydir"),
    "reward-model score --output dir/": ("reward-model", "score --model {rm} --input score.jsonl --output mydir/",
                                         "mydir"),
    "reward-model score --output unknown type": ("reward-model", "score --model {rm} --input score.jsonl "
                                                                 "--output scored.txt", "scored.txt"),
    "reward-model score --output under a file": ("reward-model", "score --model {rm} --input score.jsonl "
                                                                 "--output pairs.jsonl/x.jsonl", "pairs.jsonl"),
    "reward-model score --model os:getcwd": ("reward-model", "score --model os:getcwd --input score.jsonl "
                                                             "--output scored.jsonl", "os:getcwd"),
    "reward-model score --model builtins:max": ("reward-model", "score --model builtins:max --input score.jsonl "
                                                                "--output scored.jsonl", "builtins:max"),
    "align ppo --reward-model os:getcwd": ("align", "ppo --model {lm} --reward-model os:getcwd --prompts prompts.jsonl "
                                                    "--max-steps 1", "os:getcwd"),
    "labeling leaderboard --plot existing file": ("labeling", "leaderboard --store store.db --project chat "
                                                              "--plot chart.png", "--overwrite"),
    "labeling leaderboard --plot dir/": ("labeling", "leaderboard --store store.db --project chat --plot mydir/",
                                         "mydir"),
    "labeling leaderboard --plot dir": ("labeling", "leaderboard --store store.db --project chat --plot mydir", "mydir"),
    "labeling leaderboard --plot /nodir/x.png": ("labeling", "leaderboard --store store.db --project chat "
                                                             "--plot /nosuchdir-prefloop/x.png", "nosuchdir"),
    "labeling leaderboard --plot not an image": ("labeling", "leaderboard --store store.db --project chat "
                                                             "--plot chart.txt", "chart.txt"),
    "align grpo --model unknown model_type": ("align", "grpo --model badtype --prompts rft.jsonl --max-steps 1",
                                              "nosuchtype"),
    "align sft --model unknown model_type": ("align", "sft --model badtype --data sft.jsonl --max-steps 1",
                                             "nosuchtype"),
    "reward-model train --model unknown model_type": ("reward-model", "train --model badtype --data pairs.jsonl "
                                                                      "--max-steps 1", "nosuchtype"),
    "labeling generate --models unknown model_type": ("labeling", "generate --store store.db --project chat "
                                                                  "--models badtype", "nosuchtype"),
    "align eval --reference config not JSON": ("align", f"eval --policies {{lm}} --reference notjson "
                                                        f"--prompts prompts.jsonl {EVAL_QUICK}", "notjson"),
    "align demo --output-dir existing file": ("align", "demo --output-dir png.md", "png.md"),
    "align eval --output-dir existing file": ("align", "eval --policies {lm} --reference {lm} --prompts prompts.jsonl "
                                                       "--gold concise --output-dir png.md", "png.md"),
    "reward-model eval --output-dir existing file": ("reward-model", "eval --model {rm} --data pairs.jsonl "
                                                                     "--output-dir png.md", "png.md"),
    "align demo --output-dir user dir": ("align", "demo --output-dir mydir", "mydir"),
    "align demo --preset nope": ("align", "demo --output-dir demo --preset nope", "nope"),
    "align demo --preset bad gold": ("align", "demo --output-dir demo --preset presets/demo_badgold.yaml",
                                     "nosuchrule"),
    "align demo --preset bad section": ("align", "demo --output-dir demo --preset presets/demo_badrm.yaml",
                                        "max_steps"),
    "align demo --preset files beside it": ("align", "demo --output-dir demo --preset presets/demo_files.yaml",
                                            "presets/heldout.jsonl"),
    "align round --gold unknown": ("align", f"{ROUND} --gold nosuchrule", "nosuchrule"),
    "align round simulate.gold unknown": ("align", "round --config round_simgold.yaml", "nosuchrule"),
    "align round --url unreachable": ("align", f"{ROUND} --url http://127.0.0.1:1/", "127.0.0.1"),
    "align round --url not http": ("align", f"{ROUND} --url ftp://example.org/", "ftp://"),
    "align round --output-dir existing file": ("align", f"{ROUND} --output-dir png.md", "png.md"),
    "align round reward_model section out of range": ("align", "round --config round_badrm.yaml", "max_steps"),
    "align round align section out of range": ("align", "round --config round_badalign.yaml", "beta"),
    "align round evaluate section wrong type": ("align", "round --config round_badeval.yaml", "num_generations"),
    "align round preset's files beside it": ("align", "round --config presets/round_files.yaml",
                                             "presets/heldout.jsonl"),
}
for name, (tool, args, expect) in OUTPUTS.items():
    CASES[name] = case(tool, args, expect)

NAMES = {  # unknown models and projects
    "labeling import --project nosuch": ("labeling", "import --store store.db --project nosuch --file prompts.jsonl",
                                         "nosuch"),
    "labeling generate --project nosuch": ("labeling", "generate --store store.db --project nosuch --models {lm}",
                                           "nosuch"),
    "labeling generate --models unknown": ("labeling", "generate --store store.db --project chat --models nosuch-model",
                                           "nosuch-model"),
    "labeling generate --models good unknown-dir": ("labeling", "generate --store store.db --project chat --models {lm} "
                                                                "./my-sft-model", "my-sft-model"),
    "labeling tasks --project nosuch": ("labeling", "tasks build --store store.db --project nosuch", "nosuch"),
    "labeling tasks --models unknown": ("labeling", "tasks build --store store.db --project chat --models nosuch-model",
                                        "nosuch-model"),
    "labeling export --project nosuch": ("labeling", "export --store store.db --project nosuch --out out.jsonl",
                                         "nosuch"),
    "labeling stats --project nosuch": ("labeling", "stats --store store.db --project nosuch", "nosuch"),
    "labeling leaderboard --project nosuch": ("labeling", "leaderboard --store store.db --project nosuch", "nosuch"),
    "labeling init --project exists": ("labeling", "init --store store.db --project chat", "chat"),
    "labeling users disable unknown": ("labeling", "users disable nosuch --store store.db", "nosuch"),
    "labeling users add exists": ("labeling", "users add alice --password a-long-password --store store.db", "alice"),
    "labeling users add no name": ("labeling", "users add --store store.db", "name"),
    "labeling users --role unknown": ("labeling", "users add dan --role root --store store.db", "role"),
    "reward-model train --model unknown": ("reward-model", "train --model nosuch-model --data pairs.jsonl --max-steps 1",
                                           "nosuch-model"),
    "reward-model train --store --project nosuch": ("reward-model", "train --model {lm} --store store.db "
                                                                    "--project nosuch --max-steps 1", "nosuch"),
    "reward-model eval --model unknown": ("reward-model", "eval --model nosuch-dir/ --data pairs.jsonl", "nosuch-dir"),
    "reward-model eval --model causal LM": ("reward-model", "eval --model {lm} --data pairs.jsonl", "reward model"),
    "reward-model score --model causal LM": ("reward-model", "score --model {lm} --input score.jsonl "
                                                             "--output scored.jsonl", "reward model"),
    "reward-model prioritize --model causal LM": ("reward-model", "prioritize --store store.db --model {lm} "
                                                                  "--project chat", "reward model"),
    "reward-model prioritize --project nosuch": ("reward-model", "prioritize --store store.db --model {rm} "
                                                                 "--project nosuch", "nosuch"),
    "align sft --model unknown": ("align", "sft --model nosuch-model --data sft.jsonl --max-steps 1", "nosuch-model"),
    "align dpo --model unknown": ("align", "dpo --model nosuch-model --data pairs.jsonl --max-steps 1", "nosuch-model"),
    "align ppo --model unknown": ("align", "ppo --model nosuch-model --reward-model {rm} --prompts prompts.jsonl --max-steps 1",
                                  "nosuch-model"),
    "align ppo --reward-model causal LM": ("align", "ppo --model {lm} --reward-model {lm} --prompts prompts.jsonl --max-steps 1",
                                     "reward model"),
    "align ppo --store --project nosuch": ("align", "ppo --model {lm} --reward-model {rm} --store store.db "
                                                    "--project nosuch --max-steps 1", "nosuch"),
    "align dpo --config unknown name": ("align", "dpo --config nosuch-preset", "nosuch-preset"),
    "labeling serve --project nosuch": ("labeling", "serve --store store.db --port {port} --project nosuch", "nosuch"),
    "align eval --policies unknown": ("align", f"eval --policies {{lm}} ./nosuch-run --reference {{lm}} "
                                               f"--prompts prompts.jsonl {EVAL_QUICK}", "nosuch-run"),
    "align eval --reference unknown": ("align", f"eval --policies {{lm}} --reference nosuch-model "
                                                f"--prompts prompts.jsonl {EVAL_QUICK}", "nosuch-model"),
    "align eval --reward-model causal LM": ("align", f"eval --policies {{lm}} --reference {{lm}} --reward-model {{lm}} "
                                                     f"--prompts prompts.jsonl {EVAL_QUICK}", "reward model"),
    "align eval --gold unknown": ("align", "eval --policies {lm} --reference {lm} --prompts prompts.jsonl "
                                           "--gold nosuch_rule --output-dir evalout", "nosuch_rule"),
    "align eval no judge": ("align", "eval --policies {lm} --reference {lm} --prompts prompts.jsonl", "judge"),
    "align round --project nosuch": ("align", "round --store store.db --project nosuch --judges people "
                                              "--eval-prompts prompts.jsonl", "nosuch"),
    "align round --reference unknown": ("align", "round --store store.db --project chat --judges people "
                                                 "--eval-prompts prompts.jsonl --reference nosuch-model", "nosuch-model"),
    "align round no password": ("align", "round --config round_sim.yaml", "NO_SUCH_PASSWORD_ENV"),
    "align round unknown align field": ("align", "round --config round_typo.yaml", "eval_fraction"),
    "align round --algorithm unknown": ("align", "round --store store.db --project chat --judges people "
                                                 "--eval-prompts prompts.jsonl --algorithm sac", "algorithm"),
    "labeling simulate no password": ("labeling", "simulate --url http://127.0.0.1:1/ --project chat --annotators a "
                                                  "--password-env NO_SUCH_PASSWORD_ENV", "NO_SUCH_PASSWORD_ENV"),
    "labeling simulate --gold unknown": ("labeling", "simulate --url http://127.0.0.1:1/ --project chat --annotators a "
                                                     "--password-env HOME --gold nosuch_rule", "nosuch_rule"),
    "labeling simulate server down": ("labeling", "simulate --url http://127.0.0.1:1/ --project chat --annotators a "
                                                  "--password-env HOME --gold concise", "127.0.0.1"),
    "labeling simulate --temperature per annotator": ("labeling", "simulate --url http://127.0.0.1:1/ --project chat "
                                                                  "--annotators a b --temperature 1 2 3", "temperature"),
    "labeling leaderboard --bootstrap -1": ("labeling", "leaderboard --store store.db --project chat --bootstrap -1",
                                            "bootstrap"),
}
for name, (tool, args, expect) in NAMES.items():
    CASES[name] = case(tool, args, expect, subprocess=name.startswith("labeling serve"))

# Non-UTF-8 bytes where a user types them: guidelines, passwords (stdin and flag).
CASES["labeling init --guidelines non-utf8"] = case("labeling", "init --store store.db --project new "
                                                                "--guidelines latin1.md", "latin1.md")
CASES["labeling init --guidelines missing"] = case("labeling", "init --store store.db --project new "
                                                               "--guidelines nope.md", "nope.md")
CASES["labeling init --guidelines png"] = case("labeling", "init --store store.db --project new --guidelines png.md",
                                               "png.md")
CASES["labeling users add password non-utf8 stdin"] = case("labeling", "users add dan --store store.db", "password",
                                                           stdin=b"caf\xe9-password\n", subprocess=True)
CASES["labeling users add password non-utf8 flag"] = case("labeling", ["users", "add", "dan", "--store", "store.db",
                                                                       "--password", b"caf\xe9-password"],
                                                          "password", subprocess=True)
CASES["labeling users add password empty"] = case("labeling", "users add dan --store store.db", "password",
                                                  stdin=b"\n", subprocess=True)


# --- the workspace -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_model_dir):
    """The workspace every case starts from (copied per case), and the tiny models (read-only)."""
    import json

    import yaml

    import labeling
    from labeling.db import open_store, session_scope
    from labeling.importer import import_file
    from labeling.projects import create_project
    from labeling.tasks import build_tasks
    from labeling.users import create_user
    from prefloop.config import resolve_config
    from reward_model.testing import build_tiny_reward_model

    root = tmp_path_factory.mktemp("bad-input")
    work, models = root / "work", root / "models"
    work.mkdir()
    shutil.copytree(tiny_model_dir, models / "lm")
    build_tiny_reward_model(models / "rm")

    def jsonl(name, rows):
        (work / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    jsonl("prompts.jsonl", [{"prompt": f"Question {i}?"} for i in range(4)])
    jsonl("with_responses.jsonl", [{"prompt": f"Question {i}?", "responses": [
        {"model": "m1", "text": f"Answer {i}."}, {"model": "m2", "text": f"Reply {i}!"}]} for i in range(4)])
    pairs = [{"prompt": [{"role": "user", "content": f"Question {i}?"}],
              "chosen": [{"role": "assistant", "content": f"Answer {i}."}],
              "rejected": [{"role": "assistant", "content": "No."}]} for i in range(4)]
    jsonl("pairs.jsonl", pairs)
    jsonl("sft.jsonl", [{"messages": p["prompt"] + p["chosen"]} for p in pairs])
    jsonl("score.jsonl", [{"prompt": f"Question {i}?", "response": "Yes."} for i in range(2)])
    (work / "png.jsonl").write_bytes(PNG)
    for name in ("png.db", "png.yaml", "png.md", "png.parquet"):
        (work / name).write_bytes(PNG)
    (work / "latin1.jsonl").write_bytes(LATIN1)
    (work / "latin1.csv").write_bytes(b"prompt\ncaf\xe9?\n")
    (work / "latin1.md").write_bytes(b"Pick the caf\xe9 answer.\n")
    (work / "latin1.yaml").write_bytes(b"project: caf\xe9\n")
    (work / "empty.jsonl").write_text("")
    jsonl("nocol.jsonl", [{"foo": "bar"}])
    round_cfg = {"store": "store.db", "project": "chat", "eval_prompts": "prompts.jsonl", "gold": "concise"}
    jsonl("round_sim.yaml", [{**round_cfg, "simulate": {"annotators": ["sim-a"],
                                                         "password_env": "NO_SUCH_PASSWORD_ENV"}}])  # JSON is YAML
    jsonl("round_typo.yaml", [{**round_cfg, "judges": "people", "align": {"eval_fraction": 0.1}}])
    people = {**round_cfg, "judges": "people"}
    jsonl("round_badrm.yaml", [{**people, "reward_model": {"max_steps": 0}}])
    jsonl("round_badalign.yaml", [{**people, "align": {"beta": -1}}])
    jsonl("round_badeval.yaml", [{**people, "evaluate": {"num_generations": "two"}}])
    jsonl("round_simgold.yaml", [{**round_cfg, "simulate": {"annotators": ["sim-a"], "gold": "nosuchrule"}}])
    jsonl("rft.jsonl", [{"prompt": f"What is {i} + 1?", "reference": str(i + 1), "grader": {"name": "math"}}
                        for i in range(4)])
    (work / "chart.png").write_bytes(PNG)
    (work / "mydir").mkdir()
    (work / "mydir" / "keep.txt").write_text("mine\n")
    (work / "badtype").mkdir()
    (work / "badtype" / "config.json").write_text('{"model_type": "nosuchtype"}')
    (work / "notjson").mkdir()
    (work / "notjson" / "config.json").write_text('{"model_type": ')
    (work / "presets").mkdir()  # a preset's files are relative to the preset: presets/heldout.jsonl is missing
    jsonl("presets/round_files.yaml", [{**people, "eval_prompts": "heldout.jsonl"}])
    demo = yaml.safe_load(resolve_config("round_demo").read_text())
    demo.update({key: str(Path(labeling.__file__).parent.parent / demo[key]) for key in ("prompts", "eval_prompts")})
    for name, change in (("badgold", {"gold": "nosuchrule"}), ("files", {"eval_prompts": "heldout.jsonl"}),
                         ("badrm", {"reward_model": {**demo["reward_model"], "max_steps": -1}})):
        (work / "presets" / f"demo_{name}.yaml").write_text(yaml.safe_dump({**demo, **change}))

    engine = open_store(f"sqlite:///{work / 'store.db'}")
    with session_scope(engine) as session:
        create_project(session, "chat", guidelines="Pick the better answer.")
        create_user(session, "alice", "a-long-password")
        create_user(session, "boss", "another-password", role="admin")
    import_file(engine, "chat", work / "with_responses.jsonl")
    build_tasks(engine, "chat", "all_pairs")
    engine.dispose()
    shutil.copy(work / "store.db", work / "newer.db")
    with sqlite3.connect(work / "newer.db") as conn:
        conn.execute("UPDATE prefloop_meta SET value = '999' WHERE key = 'schema_version'")
    with sqlite3.connect(work / "notstore.db") as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    return work, models


@pytest.fixture(scope="module")
def busy_port():
    """A port some other program is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def run_case(c: Case, work: Path, models: Path, busy: int, capfd, monkeypatch) -> tuple[int, str]:
    fill = {"{lm}": str(models / "lm"), "{rm}": str(models / "rm"), "{port}": str(free_port()), "{busy}": str(busy)}
    argv = [_fill(a, fill) for a in c.argv]
    monkeypatch.delenv("PREFLOOP_DB", raising=False)
    if c.subprocess:
        try:
            result = subprocess.run([str(BIN / c.tool), *argv], input=c.stdin or b"", capture_output=True,
                                    cwd=work, timeout=120, env={**os.environ, "PREFLOOP_DB": ""})
        except subprocess.TimeoutExpired:
            return 0, "(still running after 120 s: the input was accepted)"
        return result.returncode, result.stderr.decode("utf-8", "replace")
    monkeypatch.chdir(work)
    main = {"labeling": "labeling.cli", "reward-model": "reward_model.cli", "align": "loop.cli"}[c.tool]
    import importlib
    import traceback

    capfd.readouterr()
    try:
        rc = importlib.import_module(main).main(argv)
    except SystemExit as exit_:
        rc = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - what a user would see as a traceback
        sys.stderr.write(traceback.format_exc())
        rc = 1
    return rc, capfd.readouterr().err


def _fill(arg, fill: dict) -> str | bytes:
    if isinstance(arg, bytes):
        return arg
    for key, value in fill.items():
        arg = arg.replace(key, value)
    return arg


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, template, tmp_path, busy_port, capfd, monkeypatch):
    c = CASES[name]
    work = tmp_path / "work"
    shutil.copytree(template[0], work)
    before = tree_digest(work), _stat(template[1])
    rc, err = run_case(c, work, template[1], busy_port, capfd, monkeypatch)
    after = tree_digest(work), _stat(template[1])
    lines = [line for line in err.splitlines() if line.strip()]
    shown = "\n    ".join(lines[-8:])
    if os.environ.get("BAD_INPUT_REPORT"):  # one line per case: name, category (for counting outcomes)
        with open(os.environ["BAD_INPUT_REPORT"], "a") as fh:
            fh.write(f"{name}\t{_category(rc, err, before != after, lines, c.expect)}\n")
    assert "Traceback" not in err, f"TRACEBACK: rc={rc}\n    {shown}"
    assert rc != 0, f"ACCEPTED: exit 0\n    {shown}"
    assert before == after, f"CHANGED: the workspace changed\n    {shown}"
    assert len(lines) == 1, f"NOT-ONE-LINE: {len(lines)} stderr lines\n    {shown}"
    assert _words(c.expect) in _words(lines[0]), f"UNCLEAR: does not name {c.expect!r}\n    {shown}"


def _stat(root: Path) -> list:
    """The models' files by size and modification time: hashing 25 MB per case would cost more than the case."""
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))]


def _category(rc: int, err: str, changed: bool, lines: list[str], expect: str) -> str:
    if "Traceback" in err:
        return "TRACEBACK"
    if rc == 0:
        return "ACCEPTED"
    if changed:
        return "CHANGED"
    if len(lines) != 1:
        return "NOT-ONE-LINE"
    return "ok" if _words(expect) in _words(lines[0]) else "UNCLEAR"


def _words(text: str) -> str:
    """--pairs-per-prompt and pairs_per_prompt name the same thing."""
    return text.lower().replace("-", "_")


def test_case_count():
    """The suite's size, so that a refactoring that drops cases shows."""
    assert len(CASES) >= 320, len(CASES)
