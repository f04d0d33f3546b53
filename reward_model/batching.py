"""Dynamic batching for `reward-model serve`: requests that arrive close together share one forward pass.

    batcher = Batcher(scorer, max_batch=32, wait_s=0.005)          # starts its worker thread
    heads = await batcher.submit(PairsJob(prompts, responses))    # (N, H) normalised, on the event loop
    batcher.close()

One worker thread owns the model: the event loop only parses requests and waits on futures, so a
forward pass never blocks it. The worker takes the first waiting job, then gathers more for up to
`wait_s` (none when a backlog is already queued) until `max_batch` pairs are in hand, tokenizes
each job (a job whose text the tokenizer refuses fails alone, with a one-line reason), and scores
all of them in one `RewardScorer.raw_scores_of_ids` call, sorted by length across requests.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field


class JobError(ValueError):
    """A request's own input could not be scored (the chat template refused it): a 400, not a 500."""


@dataclass
class Job:
    """What one request asks to be scored; the worker turns it into token ids."""

    prompts: list | None = None  # with responses: conversations and responses (POST /v1/score)
    responses: list | None = None
    texts: list[str] | None = None  # or rendered prompt + response texts (OpenRLHF's `query`)
    future: asyncio.Future | None = field(default=None, repr=False)
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.texts) if self.texts is not None else len(self.prompts)

    def encode(self, scorer) -> list[list[int]]:
        try:
            if self.texts is not None:
                return scorer.encode_texts(self.texts)
            return scorer.encode_pairs(self.prompts, self.responses)
        except Exception as err:  # noqa: BLE001 - a template's refusal is this request's fault alone
            raise JobError(f"cannot be tokenized: {_first_line(err)}") from None


class Batcher:
    """The worker thread and its queue; `submit` is called on the event loop."""

    def __init__(self, scorer, max_batch: int = 32, wait_s: float = 0.005, max_pending: int = 4096):
        self.scorer = scorer
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.max_pending = max_pending  # pairs queued at most: beyond it a request is turned away (503)
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self.batches = 0  # forward calls made, and the pairs they held (GET /v1/model shows them)
        self.pairs = 0
        self._thread = threading.Thread(target=self._run, name="reward-model-worker", daemon=True)
        self._thread.start()

    def busy(self, n: int) -> bool:
        with self._lock:
            return self._pending + n > self.max_pending

    async def submit(self, job: Job):
        """The job's normalised head scores, (N, H); raises JobError for a request the tokenizer refuses."""
        loop = asyncio.get_running_loop()
        job.future, job.loop = loop.create_future(), loop
        with self._lock:
            self._pending += len(job)
        self._queue.put(job)
        return await job.future

    def close(self, timeout: float = 30.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    # --- the worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        carry: deque = deque()  # a job taken while gathering that would not fit: first in the next batch
        while True:
            first = carry.popleft() if carry else self._queue.get()
            if first is None:
                return
            jobs = self._gather(first, carry)
            self._score(jobs)
            if jobs and jobs[-1] is None:
                return

    def _gather(self, first: Job, carry: deque) -> list:
        jobs, n = [first], len(first)
        deadline = time.monotonic() + self.wait_s
        while n < self.max_batch:
            try:  # a backlog is taken at once; otherwise wait for stragglers until the deadline
                job = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is None:
                jobs.append(None)  # stop after this batch
                break
            if n + len(job) > self.max_batch:
                carry.append(job)
                break
            jobs.append(job)
            n += len(job)
        return jobs

    def _score(self, jobs: list) -> None:
        jobs = [j for j in jobs if j is not None]
        encoded = []
        for job in jobs:
            try:
                encoded.append((job, job.encode(self.scorer)))
            except JobError as err:
                self._finish(job, error=err)
        ids = [seq for _, seqs in encoded for seq in seqs]
        try:
            heads = self.scorer.normalise(self.scorer.raw_scores_of_ids(ids)) if ids else None  # (N, H)
        except Exception as err:  # noqa: BLE001 - every request of the batch gets the one line; the worker lives on
            for job, _ in encoded:
                self._finish(job, error=RuntimeError(f"scoring failed: {_first_line(err)}"))
            return
        self.batches += 1
        self.pairs += len(ids)
        start = 0
        for job, seqs in encoded:
            self._finish(job, result=heads[start:start + len(seqs)])
            start += len(seqs)

    def _finish(self, job: Job, result=None, error: Exception | None = None) -> None:
        with self._lock:
            self._pending -= len(job)
        try:
            job.loop.call_soon_threadsafe(_resolve, job.future, result, error)
        except RuntimeError:  # the event loop has closed (shutdown): nobody is waiting
            pass


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _resolve(future: asyncio.Future, result, error) -> None:
    if future.cancelled():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
