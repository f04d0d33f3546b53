"""A small client for the labeling server's JSON API (`POST /v1/<endpoint>`, labeling.app.rest).

    from labeling.client import LabelingClient
    client = LabelingClient("http://127.0.0.1:7860/", "alice", "her-password")
    while (task := client.next_task("chat")["task"]) is not None:
        client.submit(task["assignment_id"], task["client_request_id"], choice="a_better")

One HTTP request per call over a kept-alive connection (httpx), signed in with the server's
own `/login`. The endpoints and their parameters are those of the Gradio API (`labeling.app.api`).
"""

from __future__ import annotations

import functools
import threading

from prefloop.errors import InputError


class ApiError(InputError):
    """The server refused the call (bad input, a lease that is gone, missing rights); its one-line reason."""


class LabelingClient:
    def __init__(self, url: str, name: str, password: str, timeout: float = 60.0):
        import httpx

        self.http = httpx.Client(base_url=url if url.endswith("/") else url + "/", timeout=timeout,
                                 verify=_tls_context())
        reply = self.http.post("login", data={"username": name, "password": password})
        if reply.status_code != 200:
            self.http.close()
            raise ApiError(f"{url}: sign-in as {name!r} refused ({reply.status_code}: {_reason(reply, 'detail')})")

    def call(self, endpoint: str, **params):
        """POST /v1/<endpoint> with `params` as its JSON body; the endpoint's result."""
        reply = self.http.post(f"v1/{endpoint}", json=params)
        if reply.status_code != 200:
            raise ApiError(f"/v1/{endpoint}: {_reason(reply, 'error')} ({reply.status_code})")
        return reply.json()

    def next_task(self, project: str) -> dict:
        return self.call("next_task", project=project)

    def submit(self, assignment_id: int, client_request_id: str, **answer) -> dict:
        """answer: choice, ranking, ratings, rationale, edited_response, ms_spent (see /v1/submit)."""
        return self.call("submit", assignment_id=assignment_id, client_request_id=client_request_id, **answer)

    def skip(self, assignment_id: int, reason: str) -> dict:
        return self.call("skip", assignment_id=assignment_id, reason=reason)

    def progress(self, project: str) -> dict:
        return self.call("progress", project=project)

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def _tls_context():
    """One certificate store per process: httpx builds a new one for every client (~40 ms CPU), which in a
    burst of sign-ins costs the client more than the server's password check. Locked, so that threads
    signing in at the same moment do not each build it."""
    with _TLS_LOCK:
        return _build_tls_context()


_TLS_LOCK = threading.Lock()


@functools.cache
def _build_tls_context():
    import httpx

    return httpx.create_ssl_context()


def _reason(reply, key: str) -> str:
    try:
        return str(reply.json()[key])
    except (ValueError, KeyError, TypeError):
        return reply.text[:200] or reply.reason_phrase
