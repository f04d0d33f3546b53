"""The grader worker process (started by align/graders/budget.py's GradeWorker; not a command).

    python -m align.graders.worker READ_FD WRITE_FD MEMORY_MB

Reads ("load", [module:function, ...]) and ("batch", [(name, prompt, response, reference, options), ...])
from READ_FD and answers each on WRITE_FD: ("ready",), ("loaded",), ("grade", score, why) or
("spec", one line). The deadlines are the parent's: it kills this process's tree when an answer
runs over. Here: an address-space limit (RLIMIT_AS) so an answer that allocates without bound gets
MemoryError ("over memory"), and a subreaper, so whatever a grade forks (and its orphans) is this
process's child and is killed when the grade ends.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
from multiprocessing.connection import Connection

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


def main(argv: list[str]) -> int:
    from align.graders import run_grader
    from align.graders.base import GraderSpecError
    from align.graders.python import load_function

    read_fd, write_fd, memory_mb = int(argv[0]), int(argv[1]), int(argv[2])
    inp, out = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the trainer gone, nothing is left running
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out.send(("ready",))
    while True:
        try:
            kind, payload = inp.recv()
        except (EOFError, OSError):
            return 0
        if kind == "load":
            try:
                for function in payload:
                    load_function(function)
                out.send(("loaded",))
            except GraderSpecError as err:
                out.send(("spec", str(err)))
            continue
        for name, prompt, response, reference, options in payload:
            try:
                g = run_grader(name, prompt, response, reference, options)
                reply = ("grade", float(g), g.why)
            except GraderSpecError as err:
                reply = ("spec", str(err))
            except MemoryError:
                reply = ("grade", 0.0, f"over memory (limit {memory_mb} MiB)")
            finally:
                reap_children()
            out.send(reply)


def reap_children() -> None:
    """Kill and reap whatever the grade forked (a subreaper sees its orphans too). Cheap when there is none."""
    from align.graders.budget import kill_tree

    try:
        os.waitpid(-1, os.WNOHANG)  # reaps one that has exited; raises when there was never any
    except ChildProcessError:
        return  # no children: the common case, one system call
    kill_tree(os.getpid(), include_root=False)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
