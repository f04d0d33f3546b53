"""Shared fixtures: stores on SQLite and PostgreSQL, the embedded model, a tiny model.

PostgreSQL tests use the server named by $PREFLOOP_TEST_PG_URL (dev.py and .ci/run
start one). Each test gets a fresh database on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from labeling.db import open_store
from prefloop.net import free_port

PG_URL_ENV = "PREFLOOP_TEST_PG_URL"
ROOT = Path(__file__).resolve().parents[1]


def _pg_admin_url() -> str | None:
    url = os.environ.get(PG_URL_ENV)
    if url is None and os.environ.get("CI"):
        pytest.fail(f"${PG_URL_ENV} is not set: .ci/run must start PostgreSQL")
    return url


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def pg_url():
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    admin = _pg_admin_url()
    if admin is None:
        pytest.skip(f"no PostgreSQL: set ${PG_URL_ENV} (python dev.py test does)")
    from sqlalchemy import create_engine, text

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield admin.rsplit("/", 1)[0] + "/" + name
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request):
    """Run a store test once on a SQLite file and once on a real PostgreSQL server."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(store_url):
    engine = open_store(store_url)
    yield engine
    engine.dispose()


@pytest.fixture
def memory_engine():
    """An in-memory SQLite store (StaticPool): the fastest store for logic tests."""
    engine = open_store("sqlite://")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def smollm2_dir():
    """The embedded SmolLM2-135M-Instruct as a safetensors directory (converted once)."""
    from prefloop.models import resolve_model

    return resolve_model()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir):
    """A randomly initialised 2-layer Llama with the SmolLM2 tokenizer."""
    from prefloop.testing import build_tiny_causal_lm

    return str(build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm")))


@pytest.fixture
def tiny_cpu():
    """fp32 and one thread for tiny-model tests (prefloop.testing.tiny_cpu_settings): exact numbers, and no
    OpenMP threads spinning against each other on a shared machine. A module opts in with
    `pytestmark = pytest.mark.usefixtures("tiny_cpu")`."""
    from prefloop.testing import tiny_cpu_settings

    with tiny_cpu_settings():
        yield


@pytest.fixture
def accelerate_launch():
    """`launch(CLI_MODULE, *args)` runs `accelerate launch --config_file configs/<config> --num_processes 2
    -m CLI_MODULE ARGS` (e.g. `-m align.cli ppo --model ...`): the command a user runs, as two CPU processes
    over gloo, fp32 and one thread each. Asserts it exited 0 and returns the CompletedProcess.

    Not accelerate's `--cpu` flag (it would start CPU processes through mpirun only; see the yaml). Each
    launch gets a free port, so that test runs side by side on one machine do not meet on accelerate's
    default 29500. tests/ is on the path: reward functions such as `ppo_helpers:letter_a_reward` load."""

    def launch(module: str, *args, config: str = "accelerate_ddp.yaml", num_processes: int = 2,
               timeout: int = 600) -> subprocess.CompletedProcess:
        port = free_port()
        path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path, "PREFLOOP_CPU_BF16": "0", "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs" / config),
               "--num_processes", str(num_processes), "--main_process_port", str(port),
               "-m", module, *map(str, args)]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        return proc

    return launch


def pytest_collection_modifyitems(config, items):
    """Tests parametrized onto PostgreSQL carry the `postgres` marker (`-m "not postgres"` to leave them out)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec and "postgres" in callspec.params.values():
            item.add_marker(pytest.mark.postgres)
