"""`labeling backup`: a copy taken while simulated annotators label through a live server is whole
(integrity check), holds every judgment acknowledged before it began, and opens in `labeling` commands."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _labeling_seed import PASSWORD, seed_project, seed_users, start_server
from labeling.backup import main
from labeling.client import LabelingClient
from labeling.db import open_store
from labeling.simulate import GoldAnnotator
from prefloop.errors import InputError, StoreError
from prefloop.gold import load_gold

ROOT = Path(__file__).resolve().parents[1]
ANNOTATORS = [f"sim-{i}" for i in range(4)]


def _label(url: str, name: str, stop: threading.Event, acked: list, lock: threading.Lock) -> None:
    """A simulated annotator (labeling.simulate's gold judge) that notes the id of every judgment the
    server acknowledged (/submit returned it)."""
    policy = GoldAnnotator(load_gold("positive_words"), seed=hash(name) % 1000)
    with LabelingClient(url, name, PASSWORD) as client:
        while not stop.is_set():
            task = client.next_task("p")["task"]
            if task is None:
                return
            reply = client.submit(task["assignment_id"], task["client_request_id"], **policy(task))
            with lock:
                acked.append(reply["judgment_id"])


def _labeling(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(Path(sys.executable).parent / "labeling"), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_a_backup_during_labeling_holds_every_acknowledged_judgment(tmp_path):
    store = tmp_path / "store.db"
    engine = open_store(f"sqlite:///{store}")
    seed_project(engine, "p", n_tasks=600, overlap=2, responses=["a great and helpful answer", "a rude answer"])
    seed_users(engine, ANNOTATORS)
    url, app = start_server(engine)
    stop, lock, acked = threading.Event(), threading.Lock(), []
    threads = [threading.Thread(target=_label, args=(url, name, stop, acked, lock)) for name in ANNOTATORS]
    for t in threads:
        t.start()
    try:
        while len(acked) < 40 and any(t.is_alive() for t in threads):
            time.sleep(0.05)
        with lock:
            before = set(acked)  # acknowledged before the backup began
        copy = tmp_path / "copy.db"
        done = _labeling("backup", "--store", str(store), "--out", str(copy))
        with lock:
            during = len(acked) - len(before)  # acknowledged while the backup process ran
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        app.close()
        engine.dispose()
    assert done.returncode == 0, done.stderr
    assert during > 0, "the annotators stopped before the backup: it did not run under load"
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        in_copy = {row[0] for row in conn.execute("SELECT id FROM judgment")}
    print(f"\nacknowledged before the backup: {len(before)}; judgments in the copy: {len(in_copy)}, "
          f"{len(before & in_copy)} of them acknowledged before; acknowledged while it ran: {during}; "
          f"total acknowledged {len(acked)}; {done.stdout.strip()}")
    assert before <= in_copy
    assert f"{len(in_copy)} judgments" in done.stdout and "integrity ok" in done.stdout
    stats = _labeling("stats", "--store", str(copy), "--project", "p")
    assert stats.returncode == 0, stats.stderr
    assert "p" in stats.stdout and str(len(in_copy)) in stats.stdout


def test_an_existing_file_is_refused_in_one_line_and_left_alone(tmp_path, capsys):
    store = tmp_path / "store.db"
    open_store(f"sqlite:///{store}").dispose()
    existing = tmp_path / "keep.db"
    existing.write_bytes(b"precious")
    done = _labeling("backup", "--store", str(store), "--out", str(existing))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "exists" in done.stderr
    assert existing.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    with pytest.raises(StoreError, match="no such store"):
        main(["--store", str(tmp_path / "typo.db"), "--out", str(tmp_path / "x.db")])
    assert not (tmp_path / "typo.db").exists() and not (tmp_path / "x.db").exists()
    with sqlite3.connect(tmp_path / "other.db") as other:
        other.execute("CREATE TABLE notes (text)")
    with pytest.raises(StoreError, match="not a prefloop store"):
        main(["--store", str(tmp_path / "other.db"), "--out", str(tmp_path / "x.db")])


def test_postgresql_is_refused_with_the_pg_dump_line_and_no_password():
    with pytest.raises(InputError, match="pg_dump --format=custom --file dump.pgc") as err:
        main(["--store", "postgresql+psycopg://prefloop:s3cret@db.example:5432/prefloop", "--out", "dump.pgc"])
    assert "s3cret" not in str(err.value) and "postgresql://prefloop@db.example:5432/prefloop" in str(err.value)
