"""The arena's bounded worker pool, its per-annotator limits, and the two live answers of one comparison.

    pool = GenerationPool(workers=4)
    battle = Battle.start(pool, backends, settings, prompt, a, b, owner="ann")
    while not battle.done:
        battle.wait(0.1)           # also proves that somebody still reads (see idle_cancel_s)
        battle.texts, battle.positions
    battle.answers()                # both Answers, or BackendError

Generation blocks, so it runs in `workers` threads, never on the event loop; jobs beyond them wait
in a FIFO whose position each waiting job can report. A job is cancelled when its battle is
cancelled (the tab closed, the annotator asked again) or when nobody has read it for `idle_cancel_s`
(a reader that vanished without a word). `Limits` bounds each annotator: comparisons per minute,
and one comparison at a time (a new one cancels the old).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from labeling.arena import Answer, ModelSpec
from labeling.models import ArenaSettings
from prefloop.errors import InputError

IDLE_CANCEL_S = 15.0
log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """One model's answer in the making; its fields are written by the worker and read by the page."""

    run: Callable[["Job"], tuple[int, bool]]
    pool: "GenerationPool"
    text: str = ""
    started: float | None = None
    first_token: float | None = None
    ended: float | None = None
    result: tuple[int, bool] | None = None
    error: str | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    last_read: float = field(default_factory=time.monotonic)

    def emit(self, piece: str) -> None:
        if self.first_token is None:
            self.first_token = time.monotonic()
        self.text += piece

    def cancelled(self) -> bool:
        idle = time.monotonic() - self.last_read > self.pool.idle_cancel_s
        return self.cancel_event.is_set() or idle

    def cancel(self) -> None:
        self.cancel_event.set()
        self.pool.forget(self)

    @property
    def done(self) -> bool:
        return self.ended is not None

    @property
    def position(self) -> int:
        """0 while generating or done, else the place in the queue (1: next)."""
        return self.pool.position(self)


class GenerationPool:
    """`workers` threads (started on first use) taking jobs first come, first served."""

    def __init__(self, workers: int = 4, idle_cancel_s: float = IDLE_CANCEL_S):
        if workers < 1:
            raise InputError(f"arena workers={workers}: at least 1")
        self.workers, self.idle_cancel_s = workers, idle_cancel_s
        self._waiting: deque[Job] = deque()
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []

    def submit(self, run: Callable[[Job], tuple[int, bool]]) -> Job:
        job = Job(run=run, pool=self)
        with self._ready:
            self._waiting.append(job)
            while len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name=f"arena-worker-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._ready.notify()
        return job

    def position(self, job: Job) -> int:
        with self._ready:
            try:
                return self._waiting.index(job) + 1
            except ValueError:
                return 0

    def forget(self, job: Job) -> None:
        """A cancelled job that has not started leaves the queue at once."""
        with self._ready:
            if job in self._waiting:
                self._waiting.remove(job)
                job.ended = time.monotonic()
                job.error = "cancelled"

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._waiting:
                    self._ready.wait()
                job = self._waiting.popleft()
            if job.cancelled():
                job.error, job.ended = "cancelled", time.monotonic()
                continue
            job.started = time.monotonic()
            try:
                job.result = job.run(job)
            except InputError as err:
                job.error = str(err)
            except Exception as err:  # noqa: BLE001 - a model's failure is shown, the worker lives on
                job.error = f"{type(err).__name__}: {err}"
            job.ended = time.monotonic()


class Limits:
    """Per annotator: at most `per_minute` comparisons started in any 60 s, and one running at a time."""

    def __init__(self):
        self._started: dict[str, deque[float]] = {}
        self._running: dict[str, "Battle"] = {}
        self._lock = threading.Lock()

    def admit(self, owner: str, per_minute: int) -> None:
        now = time.monotonic()
        with self._lock:
            started = self._started.setdefault(owner, deque())
            while started and now - started[0] >= 60:
                started.popleft()
            if len(started) >= per_minute:
                wait = 60 - (now - started[0])
                raise InputError(f"at most {per_minute} comparisons a minute in this arena: "
                                 f"try again in {wait:.0f} s")
            started.append(now)

    def replace(self, owner: str, battle: "Battle | None") -> None:
        """`battle` becomes the owner's one running comparison; the one it replaces is cancelled."""
        with self._lock:
            old = self._running.pop(owner, None)
            if battle is not None:
                self._running[owner] = battle
        if old is not None and old is not battle:
            old.cancel()

    def release(self, owner: str, battle: "Battle") -> None:
        """`battle` is over (answered, failed or abandoned): it no longer counts as the owner's running one."""
        with self._lock:
            if self._running.get(owner) is battle:
                del self._running[owner]
        battle.cancel()


class ArenaRuntime:
    """What a server's arena pages share: the worker pool, the model backends, the per-annotator limits,
    and each browser session's running comparison (cancelled when its tab closes)."""

    def __init__(self, workers: int = 4):
        from labeling.arena_backends import Backends

        self.pool, self.backends, self.limits = GenerationPool(workers), Backends(), Limits()
        self._sessions: dict[str, Battle] = {}
        self._lock = threading.Lock()

    def track(self, session: str, battle: "Battle | None") -> None:
        with self._lock:
            if battle is None:
                self._sessions.pop(session, None)
            else:
                self._sessions[session] = battle

    def session_closed(self, session: str) -> None:
        with self._lock:
            battle = self._sessions.pop(session, None)
        if battle is not None:
            battle.cancel()


@dataclass(eq=False)
class Battle:
    """Two jobs, A and B, answering one prompt."""

    models: tuple[ModelSpec, ModelSpec]
    jobs: tuple[Job, Job]

    @classmethod
    def start(cls, pool: GenerationPool, backends, settings: ArenaSettings, prompt: str,
              a: ModelSpec, b: ModelSpec) -> "Battle":
        messages = [{"role": "user", "content": prompt}]

        def runner(spec: ModelSpec):
            def run(job: Job) -> tuple[int, bool]:
                return backends.get(spec, settings).stream(messages, settings, job.emit, job.cancelled)
            return run

        return cls((a, b), (pool.submit(runner(a)), pool.submit(runner(b))))

    @property
    def done(self) -> bool:
        return all(job.done for job in self.jobs)

    @property
    def texts(self) -> tuple[str, str]:
        return self.jobs[0].text, self.jobs[1].text

    @property
    def positions(self) -> tuple[int, int]:
        return self.jobs[0].position, self.jobs[1].position

    def touch(self) -> None:
        now = time.monotonic()
        for job in self.jobs:
            job.last_read = now

    def wait(self, seconds: float) -> None:
        self.touch()
        deadline = time.monotonic() + seconds
        while not self.done and time.monotonic() < deadline:
            time.sleep(min(0.02, seconds))

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancel()

    def answers(self) -> tuple[Answer, Answer]:
        """Both finished answers; InputError naming the model (by its label) that failed."""
        for label, spec, job in zip("AB", self.models, self.jobs):
            if job.error:
                # The error names the model or its endpoint: the log gets it, the page only the label.
                log.warning("arena model %s failed: %s", spec.name, job.error)
                why = "cancelled" if job.error == "cancelled" else "see the server log"
                raise InputError(f"model {label} could not answer ({why}); ask again")
        return tuple(_answer(spec, job) for spec, job in zip(self.models, self.jobs))


def _answer(spec: ModelSpec, job: Job) -> Answer:
    tokens, finished = job.result
    return Answer(model=spec, text=job.text, tokens=tokens, seconds=job.ended - job.started,
                  first_token_s=None if job.first_token is None else job.first_token - job.started,
                  finished=finished)
