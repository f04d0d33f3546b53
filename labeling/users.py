"""Annotator accounts: passwords hashed with Argon2id (argon2-cffi's defaults, RFC 9106).

Hashing stays with argon2-cffi (m=64 MiB, t=3, p=4). Checking an Argon2id hash goes through
libsodium (PyNaCl) when it is installed: the same hash at the same strength, verified by
libsodium's vectorised fill in about 0.6x the CPU of argon2-cffi's build (0.14 against 0.23 s on
the 2-core AMD EPYC of BENCHMARKS.md), and a burst of sign-ins is nothing but these checks.
"""

from __future__ import annotations

import functools
import re

from sqlmodel import Session, select

from labeling.models import ROLES, Annotator
from prefloop.errors import InputError, NotFoundError

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash of no one's password, checked for unknown names so that they cost what a real check costs."""
    return _hasher().hash("no account has this password")


def verify_password(encoded: str, password: str) -> bool:
    """True when `password` matches the stored hash; False for a wrong password or a malformed hash."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        secret = password.encode("utf-8")
    except UnicodeEncodeError:  # surrogates smuggled in: no stored password can match
        return False
    if encoded.startswith("$argon2id$"):
        try:
            from nacl.exceptions import InvalidkeyError
            from nacl.pwhash import argon2id
        except ImportError:
            pass
        else:
            try:
                return argon2id.verify(encoded.encode("ascii"), secret)
            except InvalidkeyError:  # the wrong password
                return False
            except Exception:  # noqa: BLE001 - a hash libsodium cannot read: argon2-cffi decides below
                pass
    try:
        return _hasher().verify(encoded, secret)
    except (VerificationError, InvalidHashError):
        return False


def create_user(session: Session, name: str, password: str, role: str = "annotator") -> Annotator:
    if not _NAME.match(name):
        raise InputError(f"user name {name!r}: use 1-64 letters, digits, _ . @ -")
    if role not in ROLES:
        raise InputError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8, smuggled in as surrogates by the terminal
        raise InputError(f"password for {name}: not UTF-8 text") from None
    if len(password) < MIN_PASSWORD:
        raise InputError(f"password for {name}: at least {MIN_PASSWORD} characters")
    if session.exec(select(Annotator).where(Annotator.name == name)).first():
        raise InputError(f"user {name!r} already exists")
    user = Annotator(name=name, role=role, password_hash=_hasher().hash(password))
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, name: str, password: str) -> Annotator | None:
    """The active user with that name and password, else None (same answer for every failure)."""
    user = session.exec(select(Annotator).where(Annotator.name == name)).first()
    if user is None or not user.active:
        verify_password(_dummy_hash(), password)  # spend the same time as a real check: no user-name oracle
        return None
    return user if verify_password(user.password_hash, password) else None


def get_user(session: Session, name: str) -> Annotator:
    user = session.exec(select(Annotator).where(Annotator.name == name)).first()
    if user is None:
        raise NotFoundError(f"user {name!r} does not exist")
    return user


def set_active(session: Session, name: str, active: bool) -> Annotator:
    user = get_user(session, name)
    user.active = active
    session.add(user)
    return user


def list_users(session: Session) -> list[Annotator]:
    return list(session.exec(select(Annotator).order_by(Annotator.name)))
