"""dev.py's child process (`labeling demo`, `align demo`, pytest) ends with dev.py: a SIGTERM or SIGINT
sent to dev.py is passed on, and dev.py waits until the child has finished its clean-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The child: notes its pid, and on SIGTERM or SIGINT takes a moment to clean up (as a server closing
# its port does), writes which signal it got, and exits with status 3.
CHILD = """
import os, signal, sys, time
from pathlib import Path
here = Path(sys.argv[1])
def stop(signum, frame):
    time.sleep(0.5)
    (here / "cleaned-up").write_text(signal.Signals(signum).name)
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
(here / "child.pid").write_text(str(os.getpid()))
time.sleep(120)
"""

# dev.py's own way to run a command (what `python3 dev.py demo` runs `labeling demo` with), without its install step
DEV = "import sys; sys.path.insert(0, sys.argv[1]); import dev; sys.exit(dev.call([sys.executable, '-c', sys.argv[2], sys.argv[3]]))"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_dev_py_ends_the_child_and_dev_py_waits_for_it(tmp_path, sig):
    dev = subprocess.Popen([sys.executable, "-c", DEV, str(ROOT), CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "child.pid").exists():
            assert dev.poll() is None and time.monotonic() < deadline, dev.stdout.read()
            time.sleep(0.05)
        child = int((tmp_path / "child.pid").read_text())
        os.kill(dev.pid, sig)  # only dev.py, as `kill` or a process manager sends it
        assert dev.wait(timeout=60) == 3, dev.stdout.read()  # the child's exit status is dev.py's
        assert (tmp_path / "cleaned-up").read_text() == sig.name  # written before dev.py ended
        assert not _alive(child)
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)


def test_a_child_that_ends_by_itself_gives_its_status_and_a_signal_death_reads_128_plus_n(tmp_path):
    code = "import sys; sys.path.insert(0, sys.argv[1]); import dev; sys.exit(dev.call(sys.argv[2:]))"
    done = subprocess.run([sys.executable, "-c", code, str(ROOT), sys.executable, "-c", "raise SystemExit(7)"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 7 and done.stdout.startswith("+ ")
    killed = subprocess.run([sys.executable, "-c", code, str(ROOT), sys.executable, "-c",
                             "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], capture_output=True,
                            timeout=60)
    assert killed.returncode == 128 + signal.SIGKILL


def test_labeling_demo_prints_the_hardware_and_precision_line(tiny_model_dir, tmp_path):
    """README: every command prints the hardware and the precision it picked; `python3 dev.py demo` runs this."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([str(Path(sys.executable).parent / "labeling"), "demo", "--dir", str(tmp_path / "demo"),
                           "--model", tiny_model_dir, "-n", "1", "--max-new-tokens", "4", "--serve", "false"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "hardware: cpu" in done.stdout and " -> precision " in done.stdout, done.stdout
