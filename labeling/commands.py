"""The store-side `labeling` commands: init, users, import, generate, tasks.

One config dataclass per command; each `*_main(argv)` parses it with
`prefloop.config.parse_config` (`--config FILE.yaml` plus flag overrides).
"""

from __future__ import annotations

import getpass
import sys
from dataclasses import dataclass, field

from prefloop.config import check_ranges, parse_config
from prefloop.errors import InputError
from prefloop.fields import store_field


@dataclass
class InitConfig:
    """Create (or upgrade) a store, and optionally a project in it."""

    store: str | None = store_field()
    project: str | None = field(default=None, metadata={"help": "project to create"})
    mode: str = field(default="pairwise", metadata={"help": "pairwise A/B or K-way ranking", "choices": ["pairwise", "ranking"]})
    k: int = field(default=2, metadata={"help": "candidates per ranking task", "range": "[2, 9]"})
    overlap: int = field(default=1, metadata={"help": "distinct annotators per task", "range": ">= 1"})
    criteria: list[str] = field(default_factory=list, metadata={"help": "criteria rated 1..5, e.g. helpfulness harmlessness honesty"})
    guidelines: str | None = field(default=None, metadata={"help": "markdown file with the annotation guidelines"})
    gold_rate: float = field(default=0.0, metadata={"help": "share of served tasks that are gold tasks",
                                                    "range": "[0, 1]"})
    lease_seconds: int = field(default=1800, metadata={"help": "an unanswered assignment returns to the queue after this",
                                                       "range": ">= 1"})

    def __post_init__(self):
        check_ranges(self)


def init_main(argv: list[str]) -> int:
    from labeling.db import db_url, open_store, session_scope
    from labeling.migrations import schema_version
    from labeling.projects import create_project
    from prefloop.data import read_text

    cfg = parse_config(InitConfig, argv, prog="labeling init")
    guidelines = read_text(cfg.guidelines, "guidelines") if cfg.guidelines else ""
    engine = open_store(cfg.store)
    print(f"store {db_url(cfg.store)} at schema version {schema_version(engine)}")
    if cfg.project:
        with session_scope(engine) as session:
            project = create_project(session, cfg.project, guidelines=guidelines, mode=cfg.mode, k=cfg.k,
                                     overlap=cfg.overlap, criteria=cfg.criteria, gold_rate=cfg.gold_rate,
                                     lease_seconds=cfg.lease_seconds)
            print(f"project {project.name!r} created ({project.mode}, overlap {project.overlap})")
    return 0


@dataclass
class UserConfig:
    """Add, list, disable or enable annotator accounts."""

    action: str = field(default="list", metadata={"help": "what to do", "choices": ["add", "list", "disable", "enable"]})
    name: str | None = field(default=None, metadata={"help": "user name"})
    role: str = field(default="annotator", metadata={"help": "annotator or admin", "choices": ["annotator", "admin"]})
    password: str | None = field(default=None, metadata={
        "help": "password (else asked on a terminal; when stdin is not a terminal, its first line is the password)"})
    store: str | None = store_field()


def users_main(argv: list[str]) -> int:
    from labeling.db import open_store, session_scope
    from labeling.users import create_user, list_users, set_active

    argv = _positionals(argv, ["--action", "--name"])  # `labeling users add NAME ...`
    cfg = parse_config(UserConfig, argv, prog="labeling users")
    engine = open_store(cfg.store, create=False)
    if cfg.action != "list" and not cfg.name:
        raise InputError(f"users {cfg.action}: a user name is required")
    with session_scope(engine) as session:
        if cfg.action == "add":
            create_user(session, cfg.name, cfg.password or _read_password(), cfg.role)
            print(f"user {cfg.name!r} added ({cfg.role})")
        elif cfg.action == "list":
            for user in list_users(session):
                print(f"{user.name:<24} {user.role:<10} {'active' if user.active else 'disabled'}")
        else:
            set_active(session, cfg.name, cfg.action == "enable")
            print(f"user {cfg.name!r} {cfg.action}d")
    return 0


def _positionals(argv: list[str], flags: list[str]) -> list[str]:
    """Leading positional words become the given flags: ["add", "bob", "--x"] -> ["--action", "add", "--name", "bob", "--x"]."""
    out = list(argv)
    for i, flag in enumerate(flags):
        if len(out) > 2 * i and not out[2 * i].startswith("-"):
            out.insert(2 * i, flag)
        else:
            break
    return out


def _ready(stream, seconds: float) -> bool:
    """Whether `stream` has input (or its end) within `seconds`; a stream select cannot watch counts as ready."""
    import select

    try:
        return bool(select.select([stream], [], [], seconds)[0])
    except (OSError, ValueError):
        return True


def _read_password() -> str:
    if not sys.stdin.isatty():  # a pipe or a file: said when it makes the command wait, so that it is no mystery
        if not _ready(sys.stdin, 0.2):
            print("password: reading the first line of standard input (not a terminal)", file=sys.stderr, flush=True)
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass("password: ")


@dataclass
class ImportConfig:
    """Import prompts (optionally with responses) from JSONL, CSV, Parquet, a datasets directory or hf:NAME."""

    file: str = field(default="", metadata={"help": "input file, datasets directory, or hf:NAME[:SPLIT]"})
    project: str = field(default="", metadata={"help": "project to import into"})
    format: str | None = field(default=None, metadata={"help": "override the format detected from the suffix",
                                                        "choices": ["jsonl", "csv", "parquet", "datasets"]})
    model: str = field(default="imported", metadata={"help": "model name for responses without a model column"})
    store: str | None = store_field()

    def __post_init__(self):
        if not self.file or not self.project:
            raise ValueError("--file and --project are required")


def import_main(argv: list[str]) -> int:
    from labeling.db import open_store
    from labeling.importer import import_file

    cfg = parse_config(ImportConfig, argv, prog="labeling import")
    report = import_file(open_store(cfg.store, create=False), cfg.project, cfg.file, cfg.format, cfg.model)
    print(f"imported {cfg.file}: {report}")
    return 0


@dataclass
class GenerateConfig:
    """Sample N candidate responses per prompt from one or more models (resumable)."""

    project: str = field(default="", metadata={"help": "project whose prompts get candidates"})
    models: list[str] = field(default_factory=lambda: ["smollm2-135m-instruct"],
                              metadata={"help": "HF ids, local dirs or the embedded default"})
    num_generations: int = field(default=2, metadata={"help": "candidates per prompt and model", "range": ">= 1",
                                                      "short": "-n", "aliases": ("n",)})
    round: int = field(default=0, metadata={"help": "data round these candidates belong to", "range": ">= 0"})
    max_new_tokens: int = field(default=128, metadata={"help": "response length limit", "range": ">= 1"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature T > 0", "range": "> 0"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling threshold", "range": "(0, 1]"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call", "range": ">= 1"})
    seed: int = field(default=0, metadata={"help": "sampling seed", "range": "seed"})
    split: str | None = field(default=None, metadata={"help": "only prompts of this split"})
    max_prompts: int | None = field(default=None, metadata={"help": "at most this many prompts", "range": ">= 1",
                                                            "aliases": ("limit",)})
    store: str | None = store_field()

    def __post_init__(self):
        if not self.project:
            raise ValueError("--project is required")
        check_ranges(self)  # temperature > 0: N candidates per prompt are sampled


def generate_main(argv: list[str]) -> int:
    cfg = parse_config(GenerateConfig, argv, prog="labeling generate")  # before torch: --help stays instant

    from labeling.db import get_project, open_store, session_scope
    from labeling.generate import generate_candidates
    from prefloop.generation import SamplingConfig
    from prefloop.hardware import detect
    from prefloop.models import check_model

    engine = open_store(cfg.store, create=False)
    with session_scope(engine, immediate=False) as session:
        get_project(session, cfg.project)
    for model in cfg.models:  # every model before any work: a typo in the last must not cost minutes
        check_model(model)
    print(f"hardware: {detect().describe()}")
    sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_p, 0, cfg.seed)
    for model in cfg.models:
        report = generate_candidates(engine, cfg.project, model, n=cfg.num_generations, round=cfg.round, sampling=sampling,
                                     batch_size=cfg.batch_size, split=cfg.split, limit=cfg.max_prompts)
        print(report)
    return 0


@dataclass
class TasksConfig:
    """Build comparison tasks from candidates (all pairs, balanced random pairs, or ranking sets of K)."""

    action: str = field(default="build", metadata={"help": "what to do", "choices": ["build"]})
    project: str = field(default="", metadata={"help": "project to build tasks for"})
    strategy: str = field(default="random_pairs", metadata={"help": "how candidates are grouped",
                                                             "choices": ["all_pairs", "random_pairs", "ranking"]})
    pairs_per_prompt: int = field(default=1, metadata={"help": "random_pairs: pairs per prompt", "range": ">= 1"})
    k: int | None = field(default=None, metadata={"help": "ranking: candidates per task (default: the project's K)",
                                                  "range": "[2, 9]"})
    models: list[str] = field(default_factory=list, metadata={"help": "only candidates from these models"})
    round: int | None = field(default=None, metadata={"help": "only candidates from this round", "range": ">= 0"})
    same_model_pairs: bool = field(default=False, metadata={"help": "also pair two responses of one model"})
    priority: float = field(default=0.0, metadata={"help": "priority of the new tasks (higher first)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    store: str | None = store_field()

    def __post_init__(self):
        if not self.project:
            raise ValueError("--project is required")
        check_ranges(self)


def tasks_main(argv: list[str]) -> int:
    from labeling.db import open_store
    from labeling.tasks import build_tasks

    argv = _positionals(argv, ["--action"])  # `labeling tasks build ...`
    cfg = parse_config(TasksConfig, argv, prog="labeling tasks")
    added = build_tasks(open_store(cfg.store, create=False), cfg.project, cfg.strategy,
                        pairs_per_prompt=cfg.pairs_per_prompt, k=cfg.k, models=cfg.models or None, round=cfg.round,
                        cross_model_only=not cfg.same_model_pairs, priority=cfg.priority, seed=cfg.seed)
    print(f"{added} tasks added to {cfg.project!r}")
    return 0
