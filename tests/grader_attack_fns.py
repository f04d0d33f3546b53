"""The operator's own python graders that misbehave, for tests/test_grader_attack.py (imported by the grader
worker as grader_attack_fns:NAME; kept apart from the test module so a worker imports no pytest)."""

from __future__ import annotations

import os
import time

MARKER_ENV = "PREFLOOP_ATTACK_DIR"  # where a fork that escaped would write


def fine(prompt, response, reference):
    return 1.0 if response == reference else 0.0


def loops(prompt, response, reference):
    if response == reference:
        return 1.0
    while True:
        pass


def allocates(prompt, response, reference):
    if response == reference:
        return 1.0
    hoard = []
    while True:
        hoard.append(bytes(2**26))  # calloc'd, untouched: the address-space limit, not page faults, stops it


def forks(prompt, response, reference):
    """Forks a child that outlives the call (it would write a file after 3 s) and returns at once."""
    if response == reference:
        return 1.0
    if os.fork() == 0:
        os.setsid()  # even a child that leaves the process group must not survive the grade
        time.sleep(3)
        open(os.path.join(os.environ[MARKER_ENV], "escaped"), "w").write("the fork outlived the grade")
        os._exit(0)
    return 0.0


def forks_and_loops(prompt, response, reference):
    if response == reference:
        return 1.0
    if os.fork() == 0:
        time.sleep(3)
        open(os.path.join(os.environ[MARKER_ENV], "escaped"), "w").write("the fork outlived the grade")
        os._exit(0)
    while True:
        pass


def big_power(prompt, response, reference):
    if response == reference:
        return 1.0
    return float(10 ** 10 ** 10 > 0)  # C code holding the GIL: only a kill stops it
