"""Everything `align round` and `align demo` check before they touch the store or the disk.

A round runs for minutes to hours (generation, judging, two trainings, an evaluation), and writes to the
store from its first step. So every input is checked here first, in one place: a mistake costs one line
and changes nothing.

    the project exists                      (round; the demo makes its own)
    prompt files: present and readable      (a preset's, relative to the preset: prefloop.config.rebase_paths)
    gold rules: registered, or module:function that imports
    the reference model: loadable config
    the YAML sections (simulate, reward_model, align, evaluate, launch): built as the round will build them
    launch: its accelerate config file exists
    --url: a server answers there (a connection, short timeout)
    --output-dir: a directory, or one that can be made
    the simulated annotators' password: set in its environment variable
(The demo's own directory: loop.demo.check_demo_inputs, which ends in check_round_config.)
"""

from __future__ import annotations

import os
from pathlib import Path

from prefloop.errors import ConfigError, InputError

URL_TIMEOUT_S = 3.0  # a labeling server on the same network answers a TCP connection in far less


def check_inputs(engine, cfg) -> str | None:
    """`align round`: the store's side, then check_round_config; -> the simulated annotators' password
    (None when people judge)."""
    from labeling.db import get_project, session_scope

    with session_scope(engine, immediate=False) as session:
        get_project(session, cfg.project)
    check_round_config(cfg)
    if cfg.judges != "simulated":
        return None
    from labeling.simulate import SimulateConfig

    env = cfg.simulate.get("password_env") or SimulateConfig.__dataclass_fields__["password_env"].default
    if not os.environ.get(env):
        raise InputError(f"${env} is not set: it holds the simulated annotators' password")
    return os.environ[env]


def check_round_config(cfg) -> None:
    """Every input of a round that is not in the store (see the module's list)."""
    from align.prompts import load_prompts
    from prefloop.models import check_model
    from prefloop.outputs import check_output_dir

    check_output_dir(cfg.output_dir, "--output-dir", ours=True)  # a directory of earlier rounds is reused
    load_prompts(cfg.eval_prompts)  # the file's errors (missing, not JSONL, no prompt column) in one line
    if cfg.prompts and not Path(cfg.prompts).is_file():
        raise InputError(f"prompts: {cfg.prompts}: no such file")
    _check_gold(cfg)
    if cfg.url:
        check_url(cfg.url)
    _check_sections(cfg)
    if cfg.launch and not Path(cfg.launch["config_file"]).is_file():
        raise InputError(f"launch.config_file: {cfg.launch['config_file']}: no such file")
    if cfg.reference:
        check_model(cfg.reference)


def _check_gold(cfg) -> None:
    from prefloop.gold import load_gold

    for where, spec in (("gold", cfg.gold), ("simulate.gold", cfg.simulate.get("gold"))):
        if spec:
            try:
                load_gold(spec)
            except InputError as err:
                raise InputError(f"{where}: {err}") from None


def _check_sections(cfg) -> None:
    """The configs of the round's steps, built from the YAML sections as run_round builds them (with
    placeholder paths for what the round makes): a bad value is refused now, not after generation."""
    from loop.round_config import ALIGN_CONFIGS, SECTIONS
    from prefloop.cli import load_entry

    out = Path(cfg.output_dir) / "round-N"
    fixed = {
        "simulate": {"url": cfg.url or "", "project": cfg.project, "gold": cfg.gold or "positive_words"},
        "reward_model": {"data": str(out / "pairs.train.jsonl"), "output_dir": str(out / "reward_model"),
                         "store": None, "project": None},
        "evaluate": {"policies": [str(out / "policy")], "reference": cfg.reference, "prompts": cfg.eval_prompts,
                     "reward_model": str(out / "reward_model"), "gold": cfg.gold, "output_dir": str(out / "eval")},
        "launch": {},
        "align": {"model": cfg.reference, "output_dir": str(out / "policy"),
                  **({"data": str(out / "pairs.train.jsonl")} if cfg.algorithm == "dpo" else
                     {"reward_model": str(out / "reward_model"), "prompts": None, "store": cfg.store or "prefloop.db",
                      "project": cfg.project})},
    }
    targets = {**SECTIONS, "align": ALIGN_CONFIGS[cfg.algorithm]}
    for section, target in targets.items():
        if (section == "simulate" and cfg.judges != "simulated") or (section == "launch" and not cfg.launch):
            continue
        values = getattr(cfg, section)
        merged = {**values, **fixed[section]} if section != "simulate" else {**fixed[section], **values}
        try:
            load_entry(target)(**merged)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{section}: {err}") from None


def check_url(url: str) -> None:
    """A server answers at `url`: one TCP connection with a short timeout (not a login: the judges may
    not have accounts yet)."""
    import socket
    from urllib.parse import urlparse

    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"url {url}: expected http://HOST:PORT/ of a `labeling serve`")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise InputError(f"url {url}: {err}") from None
    try:
        socket.create_connection((parts.hostname, port), timeout=URL_TIMEOUT_S).close()
    except OSError as err:
        raise InputError(f"url {url}: no server answers there ({err.strerror or err}); is `labeling serve` "
                         "running?") from None
