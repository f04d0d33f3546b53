"""A gate in front of Gradio's own routes: what its login check alone lets through.

Gradio's login check only asks "does this cookie name a session?". Behind it:

- a session of an account disabled since it signed in still reached `/config`, `/gradio_api/info`
  and the upload route. Here every request with a session is checked against the store (in a
  worker thread, never on the event loop); a disabled account's sessions are ended and refused.
  The queue routes and the JSON API (`/v1/...`, labeling.app.rest) are left to the handlers,
  which re-read the account on every call anyway.
- the upload route accepted files of any size, though the app has no upload component: refused.
- a file route (`/gradio_api/file=...`) served an admin's dashboard export to any signed-in
  annotator who had its URL. The app serves no file to annotators, so file routes are for admins.
- FastAPI's own `/openapi.json` (and `/docs`, `/redoc`, should they be switched on) answered
  without a login: here they need one, like everything else.

It also records the caller's address for the login throttle (`login.CLIENT_ADDRESS`): the socket's
peer, or the client a proxy named by `--forwarded-allow-ips` gave in X-Forwarded-For (uvicorn has
rewritten the connection's client by then, labeling.serve); from any other peer the header is ignored.
"""

from __future__ import annotations

import json
import logging
import re

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from starlette.requests import HTTPConnection

from labeling.app.login import CLIENT_ADDRESS
from labeling.models import Annotator

log = logging.getLogger("labeling.login")

UPLOAD = re.compile(r"/gradio_api/(upload|upload_progress|process_recording)/?$")
FILES = re.compile(r"/gradio_api/(file=|file/|proxy=)")
LEFT_TO_HANDLERS = re.compile(r"/gradio_api/(queue/join|queue/data|heartbeat/)")
# labeling.app.rest's routes, the whole path (after an optional root path of plain segments), so that
# no Gradio route (e.g. /gradio_api/file/.../v1/x) is ever taken for one and let through unchecked.
JSON_API = re.compile(r"^(?!.*/gradio_api/)(?:/[\w-]+)*/v1/([a-z_]+)/?$")
# FastAPI's schema and API pages (Gradio's own /gradio_api/openapi.json checks the login itself).
API_DOCS = re.compile(r"^(?!.*/gradio_api/)(?:/[\w-]+)*/(?:openapi\.json|docs|docs/oauth2-redirect|redoc)/?$")
LOGIN = re.compile(r"/login/?$")


class Guard:
    """ASGI middleware: `Starlette(middleware=[Middleware(Guard, engine=engine, proxies_trusted=False)])`.

    proxies_trusted: whether `--forwarded-allow-ips` names any proxy; when none is named, the first
    sign-in that carries X-Forwarded-For is logged once (a proxy in front that nobody named makes
    every client one address to the throttle).
    """

    def __init__(self, app, engine: Engine, proxies_trusted: bool = False):
        self.app, self.engine = app, engine
        self.warn_forwarded = not proxies_trusted

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        client = scope.get("client")
        token = CLIENT_ADDRESS.set(client[0] if client else "unknown")
        if self.warn_forwarded and LOGIN.search(scope["path"]):
            self._warn_if_forwarded(scope)
        try:
            refusal = await self._refusal(scope)
            if refusal is None:
                return await self.app(scope, receive, send)
            await send_json(send, refusal[0], {"detail": refusal[1]})
        finally:
            CLIENT_ADDRESS.reset(token)

    def _warn_if_forwarded(self, scope) -> None:
        if any(name == b"x-forwarded-for" for name, _ in scope.get("headers", [])):
            self.warn_forwarded = False
            log.warning("a sign-in from %s carried X-Forwarded-For, ignored: the sign-in throttle counts the "
                        "socket's address; behind a proxy, name it with labeling serve --forwarded-allow-ips",
                        scope["client"][0] if scope.get("client") else "unknown")

    async def _refusal(self, scope) -> tuple[int, str] | None:
        path = scope["path"]
        if UPLOAD.search(path):
            return 403, "this app accepts no uploads"
        if API_DOCS.search(path) and gradio_user(scope.get("app"), HTTPConnection(scope)) is None:
            return 401, "sign in first (POST /login)"
        if LEFT_TO_HANDLERS.search(path) or JSON_API.search(path):
            return None
        gradio_app = scope.get("app")
        tokens = getattr(gradio_app, "tokens", None)
        if not tokens:
            return None  # nobody signed in yet (or not Gradio's app): Gradio's own check answers
        user = gradio_user(gradio_app, HTTPConnection(scope))
        if user is None:
            return None  # not signed in: Gradio's own login check refuses what needs a login
        import anyio

        account = await anyio.to_thread.run_sync(self._account, user)
        if account is None or not account[0]:
            for key in [k for k, name in tokens.items() if name == user]:
                tokens.pop(key, None)  # end every session of the disabled account
            return 401, f"account {user!r} is not active"
        if FILES.search(path) and account[1] != "admin":
            return 403, "files are served to admins only"
        return None

    def _account(self, name: str) -> tuple[bool, str] | None:
        with Session(self.engine) as session:
            row = session.exec(select(Annotator.active, Annotator.role).where(Annotator.name == name)).first()
            return None if row is None else (row[0], row[1])


def gradio_user(gradio_app, conn: HTTPConnection) -> str | None:
    """The user name that the session cookie Gradio set at login maps to (None: not signed in)."""
    if not getattr(gradio_app, "tokens", None):
        return None
    cookie_id = getattr(gradio_app, "cookie_id", "")
    token = conn.cookies.get(f"access-token-{cookie_id}") or conn.cookies.get(f"access-token-unsecure-{cookie_id}")
    return gradio_app.tokens.get(token) if token else None


async def send_json(send, status: int, reply) -> None:
    body = json.dumps(reply).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
