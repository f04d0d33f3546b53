"""Sign-in: Argon2id checks off the event loop, a few at a time, with growing delays for guessers.

Gradio awaits `auth(username, password)` inside its async /login route. A plain function
there runs the ~0.2 s Argon2id verification on the event loop, so every login stalls every
other request of every annotator, and a burst of logins times out. `LoginChecker` is a
coroutine instead: the verification runs in a worker thread (argon2-cffi releases the GIL),
at most `concurrent` at once (one per core: more only makes each slower), in arrival order.

Guessing is throttled (`LoginThrottle`, after the OWASP Authentication Cheat Sheet: a lock-out
threshold, an observation window, a lock that doubles with each further failure) on three
counts of failures, none of which a stranger can turn against a user who has not failed:

- per (account, address): after `free_failures` wrong passwords for one account from one
  address, that address is delayed for that account: `base_lock_s`, doubling up to `max_lock_s`.
  The account itself stays open to every other address: five wrong passwords for `boss` from
  anywhere no longer lock out the real `boss`.
- per address, over every account name tried from it: `address_free_failures` failures, then
  the same growing delay for everything that address tries (one address spraying many names).
- per account, over all addresses (guessing spread over many addresses): beyond
  `account_free_failures` failures the account's lock applies only to the addresses that have
  themselves failed on it, so each further guess costs the attacker a fresh address, while an
  address that never failed signs in at once.

A delayed try is refused with HTTP 429 and Retry-After before any hashing, so a flood of wrong
passwords costs no Argon2 CPU, and the right password is refused too while its own address is
delayed (else the lock would only slow the guesser down to the answer). A success clears its
(account, address) record only: not the address's (one valid account would let its owner guess
at others from the same address) and not the account's (the guessers go on guessing).
The address is the socket's peer, or what a proxy named by `labeling serve --forwarded-allow-ips`
says in X-Forwarded-For (uvicorn rewrites the connection's client before this app sees it).
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
    free_failures: int = 5  # failed sign-ins per (account, address) before the first delay
    address_free_failures: int = 30  # per client address, over all account names tried from it
    account_free_failures: int = 20  # per account over all addresses; delays only addresses that failed on it
    base_lock_s: float = 30.0  # the first delay; each further failure doubles it
    max_lock_s: float = 900.0
    forget_after_s: float = 3600.0  # the observation window: a count with no failure for this long starts over
    max_keys: int = 100_000  # oldest records are dropped beyond this (random names cannot fill memory)

    def __post_init__(self):
        if min(self.free_failures, self.address_free_failures, self.account_free_failures) < 1 \
                or self.base_lock_s <= 0:
            raise ValueError("ThrottlePolicy: failures at least 1, lock time above 0")


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0
    locked_until: float = 0.0


MAX_NAME = 65  # longer than any account name (64): a longer name is kept cut, so no key holds a huge string


class LoginThrottle:
    """Failed sign-ins counted per (account, address), per address and per account; thread-safe.

    Keys are tuples: ("pair", name, address), ("address", address), ("account", name).
    """

    def __init__(self, policy: ThrottlePolicy = ThrottlePolicy(), clock: Callable[[], float] = time.monotonic):
        self.policy, self.clock = policy, clock
        self._free = {"pair": policy.free_failures, "address": policy.address_free_failures,
                      "account": policy.account_free_failures}
        self._records: OrderedDict[tuple, _Record] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def keys(name: str, address: str) -> tuple[tuple, tuple, tuple]:
        name = name[:MAX_NAME]
        return ("pair", name, address), ("address", address), ("account", name)

    def locked_for(self, name: str, address: str) -> tuple[float, str]:
        """(seconds until `name` may be tried from `address`, which count delays it); (0, "") when free."""
        pair, by_address, account = self.keys(name, address)
        now = self.clock()
        with self._lock:
            keys = [pair, by_address] + ([account] if self._live(self._records.get(pair), now) else [])
            waits = [(r.locked_until - now, key[0]) for key in keys if (r := self._live(self._records.get(key), now))]
        wait, kind = max(waits, default=(0.0, ""))
        return (wait, kind) if wait > 0 else (0.0, "")

    def failed(self, name: str, address: str) -> list[tuple[tuple, float]]:
        """Count a failure on each key; returns the (key, lock in seconds) of the locks it set."""
        now, locks = self.clock(), []
        with self._lock:
            for key in self.keys(name, address):
                lock = self._count(key, now)
                if lock:
                    locks.append((key, lock))
            while len(self._records) > self.policy.max_keys:
                self._records.popitem(last=False)
        return locks

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            self._records.pop(self.keys(name, address)[0], None)

    def _count(self, key: tuple, now: float) -> float:
        policy = self.policy
        record = self._live(self._records.pop(key, None), now) or _Record()
        record.failures, record.last = record.failures + 1, now
        over = record.failures - self._free[key[0]]
        lock = min(policy.max_lock_s, policy.base_lock_s * 2 ** min(over, 64)) if over >= 0 else 0.0
        record.locked_until = max(record.locked_until, now + lock)
        self._records[key] = record  # most recent last: the oldest are evicted first
        return lock

    def _live(self, record: _Record | None, now: float) -> _Record | None:
        """The record, unless its last failure is older than the observation window."""
        return record if record and now - record.last <= self.policy.forget_after_s else None


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
        self._refuse_if_locked(username, address)
        if self._slots is None:
            self._slots = anyio.CapacityLimiter(self.concurrent)
        async with self._slots:
            self._refuse_if_locked(username, address)  # locked while this one waited its turn
            ok = await anyio.to_thread.run_sync(self._verify, username, password)
        self._record(ok, username, address)
        return ok

    def _verify(self, username: str, password: str) -> bool:
        with Session(self.engine) as session:
            return authenticate(session, username, password) is not None

    def _refuse_if_locked(self, username: str, address: str) -> None:
        wait, kind = self.throttle.locked_for(username, address)
        if wait > 0:
            log.info("sign-in refused without checking: %r from %s is delayed %.0f s (%s count)",
                     username, address, wait, kind)
            from fastapi import HTTPException

            seconds = max(1, round(wait))
            raise HTTPException(status_code=429, detail=f"too many failed sign-ins: try again in {seconds} s",
                                headers={"Retry-After": str(seconds)})

    def _record(self, ok: bool, username: str, address: str) -> None:
        if ok:
            self.throttle.succeeded(username, address)
            return
        for key, lock in self.throttle.failed(username, address):
            log.warning("sign-in delayed: the %s count %s for %.0f s after a failed password for %r from %s",
                        key[0], key[1:], lock, username, address)
