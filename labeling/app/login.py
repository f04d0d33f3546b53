"""Sign-in: Argon2id checks off the event loop, a few at a time, with back-off and lock-out.

Gradio awaits `auth(username, password)` inside its async /login route. A plain function
there runs the ~0.2 s Argon2id verification on the event loop, so every login stalls every
other request of every annotator, and a burst of logins times out. `LoginChecker` is a
coroutine instead: the verification runs in a worker thread (argon2-cffi releases the GIL),
at most `concurrent` at once (one per core: more only makes each slower), in arrival order.

Guessing is throttled per account and per client address (`LoginThrottle`): after
`free_failures` failures in a row the key is locked for `base_lock_s`, doubling with every
further failure up to `max_lock_s`. A locked key is refused with HTTP 429 before any hashing,
so a flood of wrong passwords costs no Argon2 CPU once locked, and the right password is
refused too until the lock ends. A success clears the account's record (not the address's,
or one valid account would let its owner guess at others from the same address).
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from sqlalchemy.engine import Engine
from sqlmodel import Session

from labeling.users import authenticate

log = logging.getLogger("labeling.login")

# The caller's address for the login being checked: Gradio passes only name and password to
# `auth`, so the guard middleware (labeling.app.guard) sets this for every request.
CLIENT_ADDRESS: contextvars.ContextVar[str] = contextvars.ContextVar("client_address", default="unknown")


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 5  # failed logins per account before the first lock
    address_free_failures: int = 30  # per client address (over all account names tried from it)
    base_lock_s: float = 30.0  # the first lock; each further failure doubles it
    max_lock_s: float = 900.0
    forget_after_s: float = 3600.0  # a key with no failure for this long starts over
    max_keys: int = 100_000  # oldest records are dropped beyond this (random names cannot fill memory)

    def __post_init__(self):
        if min(self.free_failures, self.address_free_failures) < 1 or self.base_lock_s <= 0:
            raise ValueError("ThrottlePolicy: failures at least 1, lock time above 0")


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Failed-login records per key ("account:NAME", "address:IP"); thread-safe."""

    def __init__(self, policy: ThrottlePolicy = ThrottlePolicy(), clock: Callable[[], float] = time.monotonic):
        self.policy, self.clock = policy, clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def locked_for(self, *keys: str) -> float:
        """Seconds until every one of `keys` may try again (0: none is locked)."""
        now = self.clock()
        with self._lock:
            return max([0.0] + [r.locked_until - now for k in keys if (r := self._records.get(k))])

    def failed(self, key: str, free_failures: int) -> float:
        """Count a failure; returns the lock it triggered in seconds (0: none)."""
        now, policy = self.clock(), self.policy
        with self._lock:
            record = self._records.pop(key, None) or _Record()
            if now - record.last > policy.forget_after_s:
                record = _Record()
            record.failures, record.last = record.failures + 1, now
            over = record.failures - free_failures
            lock = min(policy.max_lock_s, policy.base_lock_s * 2 ** (over)) if over >= 0 else 0.0
            record.locked_until = now + lock
            self._records[key] = record  # most recent last: the oldest are evicted first
            while len(self._records) > policy.max_keys:
                self._records.popitem(last=False)
            return lock

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)


class LoginChecker:
    """`check` is the `auth` coroutine for Gradio: True when the name and password match an active account.

    Pass the bound method, not the object: Gradio awaits `auth` only when
    `inspect.iscoroutinefunction` says so, and a callable object with an async `__call__`
    would hand back an (always true) coroutine object instead.
    """

    def __init__(self, engine: Engine, policy: ThrottlePolicy | None = None, concurrent: int | None = None):
        self.engine = engine
        self.throttle = LoginThrottle(policy or ThrottlePolicy())
        self.concurrent = concurrent or os.cpu_count() or 1
        self._slots = None  # anyio.CapacityLimiter, made on first use inside the server's event loop

    async def check(self, username: str, password: str) -> bool:
        import anyio

        address = CLIENT_ADDRESS.get()
        keys = (f"account:{username}", f"address:{address}")
        self._refuse_if_locked(keys, username, address)
        if self._slots is None:
            self._slots = anyio.CapacityLimiter(self.concurrent)
        async with self._slots:
            self._refuse_if_locked(keys, username, address)  # locked while this one waited its turn
            ok = await anyio.to_thread.run_sync(self._verify, username, password)
        self._record(ok, username, address)
        return ok

    def _verify(self, username: str, password: str) -> bool:
        with Session(self.engine) as session:
            return authenticate(session, username, password) is not None

    def _refuse_if_locked(self, keys: tuple[str, str], username: str, address: str) -> None:
        wait = self.throttle.locked_for(*keys)
        if wait > 0:
            log.info("sign-in refused without checking: %r from %s is locked for %.0f s", username, address, wait)
            from fastapi import HTTPException

            raise HTTPException(status_code=429, detail=f"too many failed sign-ins: try again in {max(1, round(wait))} s",
                                headers={"Retry-After": str(max(1, round(wait)))})

    def _record(self, ok: bool, username: str, address: str) -> None:
        if ok:
            self.throttle.succeeded(f"account:{username}")
            return
        policy = self.throttle.policy
        for key, free in ((f"account:{username}", policy.free_failures),
                          (f"address:{address}", policy.address_free_failures)):
            lock = self.throttle.failed(key, free)
            if lock:
                log.warning("sign-in locked: %s for %.0f s after a failed password for %r from %s",
                            key, lock, username, address)
