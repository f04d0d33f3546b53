"""Annotator accounts: passwords hashed with Argon2id (argon2-cffi's defaults, RFC 9106)."""

from __future__ import annotations

import re

from sqlmodel import Session, select

from labeling.models import ROLES, Annotator
from prefloop.errors import InputError, NotFoundError

_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


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
    from argon2.exceptions import InvalidHashError, VerificationError

    user = session.exec(select(Annotator).where(Annotator.name == name)).first()
    if user is None or not user.active:
        _hasher().hash(password)  # spend the same time as a real check: no user-name oracle
        return None
    try:
        _hasher().verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


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
