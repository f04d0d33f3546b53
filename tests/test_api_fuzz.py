"""Every `POST /v1/<endpoint>` (labeling.app.rest) fuzzed with Hypothesis against a real server on a real store.

Whatever body a signed-in client sends (the endpoint's parameters with values of any JSON type, integers
beyond 64 bits, strings with NUL or lone surrogates, NaN and Infinity, unknown names, any JSON value, raw
bytes, nesting 200,000 deep), the answer is 200 with a JSON result or 400 with {"error": one line}: never
a 5xx. Bounded: a fixed number of examples, each a single request.
"""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _labeling_seed import PASSWORD, seed_project, seed_users, start_server
from labeling.app.api import endpoints
from labeling.app.context import AppContext
from labeling.app.params import Params

EXAMPLES = 300  # per store; about 10 s on SQLite on a loaded 2-core machine
JSON = {"content-type": "application/json"}

BIG_INTS = st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30, -(10**30), 10**4000])
INTS = st.one_of(st.integers(-3, 12), st.integers(), BIG_INTS)
ODD_TEXT = st.sampled_from(["", "p", "A", "tie", "a_better", "\0", "p\0", "\ud800", "x\udfffy", "\U0001F600",
                            "[" * 40, "a" * 300, " ", "\n", "helpfulness"])
TEXT = st.one_of(ODD_TEXT, st.text(st.characters(exclude_categories=()), max_size=20))
SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(), TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                      max_leaves=10)


def _body_for(names: list[str]):
    """Bodies for an endpoint taking `names`: its parameters (some, any type), plus the malformed kinds."""
    params = st.fixed_dictionaries({}, optional={name: VALUES for name in names})
    with_unknown = st.tuples(params, st.dictionaries(TEXT, VALUES, min_size=1, max_size=2)).map(
        lambda pair: {**pair[1], **pair[0]})
    dumped = st.one_of(params, params, with_unknown, VALUES).map(lambda v: json.dumps(v).encode())
    deep = st.tuples(st.integers(1, 200_000), st.sampled_from(["[]", "{}"]), st.booleans()).map(_nested)
    return st.one_of(dumped, dumped, dumped, deep, st.binary(max_size=64))


def _nested(spec) -> bytes:
    n, kind, balanced = spec
    if kind == "[]":
        return b"[" * n + (b"]" * n if balanced else b"")
    return b'{"project": ' * n + b"1" + (b"}" * n if balanced else b"")


@pytest.fixture
def served(engine):
    seed_project(engine, "p", n_tasks=6, overlap=2, criteria=["helpfulness"])
    seed_project(engine, "r", n_tasks=3, mode="ranking", k=3)
    seed_users(engine, ["ann"])
    seed_users(engine, ["root"], role="admin")
    url, app = start_server(engine)
    yield engine, url
    app.close()


def test_no_body_gets_a_5xx_from_any_endpoint(served):
    engine, url = served
    names = {name: list(Params(fn).checks) for name, fn in endpoints(AppContext(engine)).items()}
    clients = {who: httpx.Client(base_url=url, timeout=60) for who in ("ann", "root")}
    for who, http in clients.items():
        assert http.post("login", data={"username": who, "password": PASSWORD}).status_code == 200
        assert http.post("v1/next_task", json={"project": "p"}).json()["task"]  # an assignment to aim at
    replies: Counter = Counter()
    one_liners: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def one_request(data):
        endpoint = data.draw(st.sampled_from(sorted(names)), label="endpoint")
        who = data.draw(st.sampled_from(sorted(clients)), label="as")
        body = data.draw(_body_for(names[endpoint]), label="body")
        reply = clients[who].post(f"v1/{endpoint}", content=body, headers=JSON)
        replies[reply.status_code] += 1
        assert reply.status_code in (200, 400), (endpoint, body[:300], reply.status_code, reply.text[:300])
        if reply.status_code == 400:
            error = reply.json()["error"]
            assert isinstance(error, str) and error and "\n" not in error and len(error) < 400, error
            one_liners.append(error)

    try:
        one_request()
    finally:
        for http in clients.values():
            http.close()
    server_errors = sum(n for status, n in replies.items() if status >= 500)
    print(f"fuzzed {sum(replies.values())} requests over {len(names)} endpoints: {len(one_liners)} answered 400 "
          f"with one line, {replies[200]} answered 200, {server_errors} with a 5xx")
    assert len(one_liners) > EXAMPLES // 2  # most bodies are malformed: the checks were reached
