"""Login and roles.

Gradio's own login (`launch(auth=...)`, checked by `labeling.app.login`) guards every route:
the page, its config, the queue and the API endpoints, so browser and gradio_client use the
same accounts; `labeling.app.guard` refuses what that check alone lets through.
Gradio then tells each handler the user name (`request.username`); `viewer_for` turns
it into a Viewer re-read from the database on every call, so a deactivated account or
a changed role takes effect at once, not at the next login.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from labeling import hot_sql
from labeling.connections import read_connection


@dataclass(frozen=True)
class Viewer:
    """The signed-in user behind one request."""

    id: int
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def viewer_for(engine: Engine, username: str | None) -> Viewer:
    if not username:
        raise PermissionError("sign in first")
    with read_connection(engine) as conn:
        user = hot_sql.one(conn, hot_sql.VIEWER, name=username)
    if user is None or not user.active:
        raise PermissionError(f"account {username!r} is not active")
    return Viewer(id=user.id, name=user.name, role=user.role)


def require_admin(viewer: Viewer) -> Viewer:
    if not viewer.is_admin:
        raise PermissionError("admins only")
    return viewer
