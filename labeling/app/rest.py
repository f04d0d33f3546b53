"""The annotator API as plain JSON over HTTP: `POST /v1/<endpoint>` with the same login as the page.

    import httpx
    http = httpx.Client(base_url="http://127.0.0.1:7860/")
    http.post("login", data={"username": "alice", "password": "her-password"})  # Gradio's own sign-in
    task = http.post("v1/next_task", json={"project": "chat"}).json()["task"]

Why next to the Gradio endpoints (`labeling.app.api`): a Gradio API call is a queue join plus
an event stream per client, routed through FastAPI and Gradio's pre/post-processing; under
load that bookkeeping cost more server CPU than the judgment itself. Here one request is one
short exchange: this ASGI middleware answers `/v1/...` before any of that runs, with the same
endpoint functions (so the same `service` code and the same rules), the session cookie that
Gradio's `/login` set, and the account re-read from the store on every call. The database
work runs in worker threads, at most `concurrency` at once, except the annotator's short calls
on SQLite, which run on the event loop (`Rest`; labeling.db, "SQLite calls run on the server's
event loop").

Replies: 200 with the endpoint's JSON result; 401 when not signed in; 415 for a body that is not
`Content-Type: application/json` (what keeps other sites' pages from posting as you); 400 with
{"error": "one line"} for bad input, a lease that is gone or missing rights (the message the
Gradio endpoint would raise). Bad input is every malformed body: over MAX_BODY bytes, nested
too deep, not JSON, an unknown or missing parameter, a value not of the parameter's type or
beyond a 64-bit integer (labeling.app.params, checked before the endpoint runs). No body a
client sends gets a 5xx; tests/test_api_fuzz.py tries.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from labeling.app.guard import JSON_API, gradio_user, send_json
from labeling.app.params import Params, parse_body
from labeling.event_loop import WouldWait, on_event_loop
from prefloop.errors import InputError, UserError

ROUTE = JSON_API  # the guard leaves exactly these paths to this middleware, which answers them all
MAX_BODY = 1 << 20  # a judgment with an edited response is a few KB; refuse what no client sends
# Larger bodies are parsed in a worker thread: 1 MB of JSON built to be slow ("[],[],..." or a huge object)
# takes up to 0.3 s to parse, which on the event loop would stall every other annotator that long.
PARSE_ON_LOOP = 16 << 10


class Caller:
    """What the endpoint functions read from a Gradio request: only the signed-in name."""

    def __init__(self, username: str):
        self.username = username


class Rest:
    """ASGI middleware: `Middleware(Rest, endpoints={name: fn(request, **kwargs)}, concurrency=16, on_loop={...})`.

    `on_loop`: names of the endpoints run on the event loop itself (the app passes the annotator's short
    calls on SQLite: labeling.app.api.on_loop_endpoints). A write there that would wait for a lock raises
    labeling.event_loop.WouldWait before writing anything, and the call runs again in a worker thread.
    """

    def __init__(self, app, endpoints: dict, concurrency: int = 16, on_loop: frozenset = frozenset()):
        self.app, self.endpoints, self.concurrency = app, endpoints, concurrency
        self.on_loop = {endpoints[name] for name in on_loop}
        self.params = {fn: Params(fn) for fn in endpoints.values()}  # read once, not per call
        self._slots = None  # anyio.CapacityLimiter, made inside the server's event loop

    async def __call__(self, scope, receive, send):
        match = ROUTE.search(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            return await self.app(scope, receive, send)
        fn = self.endpoints.get(match.group(1))
        if fn is None or scope["method"] != "POST":
            return await send_json(send, 404 if fn is None else 405, {"error": f"no endpoint POST /v1/{match.group(1)}"})
        headers = dict(scope.get("headers", []))
        if _media_type(headers) != "application/json":  # a cross-site page can send text/plain but not JSON
            return await send_json(send, 415, {"error": "send the parameters as Content-Type: application/json"})
        user = gradio_user(scope.get("app"), HTTPConnection(scope))
        if user is None:
            return await send_json(send, 401, {"error": "sign in first (POST /login)"})
        try:
            body = await _body(headers, receive)
            kwargs = self._parse(fn, body) if len(body) <= PARSE_ON_LOOP else \
                await self._in_thread(self._parse, fn, body)
        except InputError as err:
            return await send_json(send, 400, {"error": str(err)})
        status, reply = await self._run(fn, user, kwargs)
        await send_json(send, status, reply)

    def _parse(self, fn, body: bytes) -> dict:
        """The endpoint's keyword arguments from the body (labeling.app.params), or InputError: one line."""
        kwargs = parse_body(body)
        self.params[fn].check(kwargs)
        return kwargs

    async def _in_thread(self, fn, *args):
        import anyio

        if self._slots is None:
            self._slots = anyio.CapacityLimiter(self.concurrency)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._slots)

    async def _run(self, fn, user: str, kwargs: dict):
        try:
            if fn in self.on_loop:
                try:
                    with on_event_loop():
                        return 200, fn(Caller(user), **kwargs)
                except WouldWait:
                    pass  # nothing was written: the call waits for its turn in a worker thread
            return 200, await self._in_thread(lambda: fn(Caller(user), **kwargs))
        except UserError as err:
            return 400, {"error": str(err)}


def _media_type(headers: dict) -> str:
    """The request's Content-Type without parameters. Requiring JSON is the CSRF guard: a browser sends
    a JSON body to another origin only after a CORS preflight, which this route does not answer."""
    value = headers.get(b"content-type", b"")
    return value.split(b";")[0].strip().lower().decode("latin-1")


async def _body(headers: dict, receive) -> bytes:
    """The request body, refused unread when its Content-Length is over MAX_BODY (and cut off there when
    it is sent in chunks without one)."""
    length = headers.get(b"content-length", b"0")
    if not length.isdigit() or len(length) > 9 or int(length) > MAX_BODY:
        raise InputError(f"body: Content-Length {length[:20].decode('latin-1')!r}; at most {MAX_BODY} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY:
            raise InputError(f"body: over {MAX_BODY} bytes")
        if not message.get("more_body"):
            return b"".join(chunks)
