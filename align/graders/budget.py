"""Every grade has a budget: a wall-clock limit (and, in the worker process, a memory limit) that holds.

Two ways a grade is bounded, chosen by measurement (`bench/bench_grpo.py --grading`, BENCHMARKS.md):

  in process   the rule graders (string_check, token_f1, math, json_fields, sections, length,
               repetition, generalpoints) are bounded by construction: the answer is cut at
               MAX_RESPONSE_CHARS, regexes run on RE2 (linear time), numbers are refused past
               an exponent and length bound before any arithmetic, JSON nesting stops at the
               stack. A grade that still took longer than the limit scores 0 ("timed out"),
               so a slow answer never earns reward. A worker round trip would cost them more
               than the 10 % of grading throughput they may lose.
  worker       graders that run code we cannot bound (ISOLATED: the user's `python` function,
               SQLite's functions for `sql`, whose printf('%.*c', 2e9, 'x') loops inside one
               call where no progress handler reaches) run in one long-lived child process: its
               own session, RLIMIT_AS = memory_mb, a subreaper for whatever it forks. Each
               answer has its own deadline; past it the whole process tree is frozen and killed,
               the answer scores 0 ("timed out"), a fresh worker takes the rest of the batch.
               Processes an answer's grade leaves behind are killed when it ends.

A row's options may tighten a limit (`sql`'s time_limit) but never loosen it: LIMIT_OPTIONS are
clamped to the operator's time limit.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from align.graders.base import Grade, GraderSpecError
from align.graders.sql import sql_result

ISOLATED = frozenset({"python", "sql"})
LIMIT_OPTIONS = {"sql": "time_limit"}  # grader -> its option that is a time limit (clamped to the budget)
LIMITED_GRADERS = {"sql": sql_result}  # their functions, whose signatures hold each limit's default (not the
# registry, align.graders, which imports this module: the arrow stays one way)
START_TIMEOUT = 60.0  # seconds for a worker to start, or to import the operator's python graders


@dataclass(frozen=True)
class Budget:
    """The operator's limits for one grade."""

    time_limit: float = 5.0  # wall-clock seconds per answer
    memory_mb: int = 1024  # address space of the worker process, MiB

    def __post_init__(self):
        if not (0 < self.time_limit < float("inf")) or self.memory_mb < 64:
            raise GraderSpecError(f"grade budget: time limit {self.time_limit} must be a positive number of "
                                  f"seconds and memory {self.memory_mb} MiB at least 64")


DEFAULT_BUDGET = Budget()


def clamp_options(name: str, options: dict, budget: Budget) -> dict:
    """`options` with the grader's own time limit no longer than the budget's (a row may only tighten it)."""
    key = LIMIT_OPTIONS.get(name)
    if key is None:
        return options
    return {**options, key: min(float(options.get(key, _default(name, key))), budget.time_limit)}


@functools.lru_cache(maxsize=None)
def _default(name: str, option: str):
    import inspect

    return inspect.signature(LIMITED_GRADERS[name]).parameters[option].default


def timed_out(limit: float) -> Grade:
    return Grade(0.0, f"timed out (over the {limit:g} s budget)")


# ---------------------------------------------------------------------------------------------------
# process trees
# ---------------------------------------------------------------------------------------------------

def descendants(root: int) -> list[int]:
    """Every live process below `root`, from /proc (parents before children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])  # the name may hold spaces and ')'
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, ()):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(root: int, include_root: bool = True) -> None:
    """Freeze the tree below `root` until no new process appears (nothing forks while we look), then kill it."""
    frozen: set[int] = set()
    for _ in range(100):
        found = set(descendants(root)) - frozen
        if not found:
            break
        for pid in found:
            _signal(pid, signal.SIGSTOP)
        frozen |= found
    for pid in frozen:
        _signal(pid, signal.SIGKILL)
    if include_root:
        _signal(root, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------------------
# the worker, from the parent's side
# ---------------------------------------------------------------------------------------------------

class _Process:
    """One worker process and the two ends of its pipes; `pending` replies not yet read (ready, loaded)."""

    def __init__(self, memory_mb: int, functions: set[str]):
        to_child, from_parent = os.pipe()[::-1]
        from_child, to_parent = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "align.graders.worker", str(from_parent), str(to_parent), str(memory_mb)],
            pass_fds=(from_parent, to_parent), start_new_session=True, stdin=subprocess.DEVNULL, env=env)
        os.close(from_parent)
        os.close(to_parent)
        self.out, self.inp = Connection(to_child, readable=False), Connection(from_child, writable=False)
        self.pending = 1  # ("ready",)
        if functions:
            self.load(functions)

    def load(self, functions) -> None:
        self.out.send(("load", sorted(functions)))
        self.pending += 1

    def reply(self, timeout: float):
        """The next message; ("timeout",) past `timeout`, ("eof",) when the process died."""
        try:
            return self.inp.recv() if self.inp.poll(timeout) else ("timeout",)
        except (EOFError, OSError):
            return ("eof",)

    def settle(self) -> tuple | None:
        """Read the pending replies (the process started, the functions imported); the first failure, if any."""
        failure = None
        while self.pending:
            reply = self.reply(START_TIMEOUT)
            self.pending -= 1
            if reply[0] in ("timeout", "eof", "spec"):
                failure = failure or reply
                if reply[0] != "spec":
                    break
        return failure

    def kill(self) -> None:
        kill_tree(self.popen.pid)
        self.popen.wait()
        self.out.close()
        self.inp.close()


class GradeWorker:
    """A child process that runs ISOLATED graders, each answer under `budget`, with a spare started beside it.

    The spare (started, the operator's python graders imported) takes over the moment an answer is killed,
    so a kill costs the rest of the batch nothing but the hand-over.
    """

    def __init__(self, budget: Budget):
        self.budget = budget
        self.current: _Process | None = None
        self.spare: _Process | None = None
        self.functions: set[str] = set()  # the python graders every worker imports before grading

    def grade_many(self, tasks: list[tuple]) -> list[Grade]:
        """Grades of (name, prompt, response, reference, options) tasks; GraderSpecError for a wrong spec."""
        tasks = [(n, p, r, ref, clamp_options(n, o, self.budget)) for n, p, r, ref, o in tasks]
        self._load({o.get("function", "") for n, _, _, _, o in tasks if n == "python"})
        out: list[Grade] = []
        spec_error = None
        while len(out) < len(tasks):
            worker = self._worker()
            worker.out.send(("batch", tasks[len(out):]))
            for _ in range(len(tasks) - len(out)):
                reply = worker.reply(self.budget.time_limit)
                if reply[0] in ("timeout", "eof"):  # this answer scores 0; the spare takes the rest
                    out.append(self._lost(reply[0]))
                    break
                if reply[0] == "spec":
                    spec_error = spec_error or reply[1]
                    out.append(Grade(0.0, reply[1]))
                else:
                    out.append(Grade(reply[1], reply[2]))
        if spec_error:
            raise GraderSpecError(spec_error)
        return out

    def close(self) -> None:
        for proc in (self.current, self.spare):
            if proc is not None:
                proc.kill()
        self.current = self.spare = None

    # -- internals --------------------------------------------------------------------------------

    def _worker(self) -> _Process:
        """The current worker, ready; the spare promoted (and a new spare started) when there is none."""
        if self.current is not None and self.current.popen.poll() is None:
            return self.current
        if self.current is not None:
            self.current.kill()
        self.current, self.spare = self.spare or _Process(self.budget.memory_mb, self.functions), None
        failure = self.current.settle()
        if failure is not None and failure[0] != "spec":
            self.close()
            raise GraderSpecError(f"the grader worker (python -m align.graders.worker) did not start within "
                                  f"{START_TIMEOUT:g} s or importing {', '.join(sorted(self.functions))} failed")
        self.spare = _Process(self.budget.memory_mb, self.functions)
        return self.current

    def _load(self, functions: set[str]) -> None:
        """Import the operator's python graders in the worker (and its spare), outside any answer's deadline."""
        new = functions - self.functions
        if not new:
            return
        worker = self._worker()
        worker.load(new)
        failure = worker.settle()
        if failure is not None:
            if failure[0] == "spec":
                raise GraderSpecError(failure[1])
            self.close()
            raise GraderSpecError(f"python: importing {', '.join(sorted(new))} took over {START_TIMEOUT:g} s")
        self.functions |= new
        if self.spare is not None:
            self.spare.load(new)

    def _lost(self, how: str) -> Grade:
        """The answer in hand scores 0: timed out (the tree is killed), or the worker died (over memory?)."""
        code = None
        if how == "eof":
            try:
                code = self.current.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.current.kill()
        self.current = None
        if code is None:
            return timed_out(self.budget.time_limit)
        if code == -signal.SIGKILL:
            return Grade(0.0, f"over memory (the worker was killed; limit {self.budget.memory_mb} MiB)")
        return Grade(0.0, f"the grader's process died (exit code {code})")


_WORKERS: dict[Budget, GradeWorker] = {}  # one worker per budget, closed at exit


def worker_for(budget: Budget) -> GradeWorker:
    if budget not in _WORKERS:
        if not _WORKERS:
            atexit.register(close_workers)
        _WORKERS[budget] = GradeWorker(budget)
    return _WORKERS[budget]


def close_workers() -> None:
    for worker in _WORKERS.values():
        worker.close()


def elapsed_check(start: float, budget: Budget, result: Grade) -> Grade:
    """An in-process grade that took longer than the budget scores 0: a slow answer earns nothing."""
    return timed_out(budget.time_limit) if time.perf_counter() - start > budget.time_limit else result
