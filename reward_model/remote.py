"""RemoteRewardScorer: a `reward-model serve` server behind RewardScorer's interface.

    export PREFLOOP_RM_TOKEN=...                               # the server's token; never in a config
    align ppo --reward-model http://rmhost:5000 --prompts data/prompts.jsonl
    reward = load_reward("http://rmhost:5000")                 # reward_model.scorer.load_reward
    reward.score(prompts, responses)                           # -> list[float], normalised, as in-process

`connect` checks the server at once (GET /v1/model: reachable, token accepted), so a wrong URL or
token fails before a trainer loads its policy. The token comes from $PREFLOOP_RM_TOKEN only: a URL
is recorded in run.json, so one holding a password (http://user:TOKEN@...) is refused.
"""

from __future__ import annotations

import os
import time
from typing import Sequence
from urllib.parse import urlsplit

from prefloop.errors import InputError
from reward_model.encoding import as_conversation, as_messages

TOKEN_ENV = "PREFLOOP_RM_TOKEN"  # the server's variable too (reward_model.serve)
RETRIES = 3  # a busy server (503) or a dropped connection mid-run is retried, with 1, 2, 4 s pauses


class RemoteRewardScorer:
    """score / score_with_std / __call__ / n_heads, like RewardScorer, over HTTP (POST /v1/score)."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0):
        import httpx

        self.url = base_url(url)
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0))
        self.info: dict = {}

    @classmethod
    def connect(cls, url: str, token: str | None = None) -> "RemoteRewardScorer":
        """A scorer whose server answered GET /v1/model with this token; else one line saying why not."""
        scorer = cls(url, token if token is not None else (os.environ.get(TOKEN_ENV, "").strip() or None))
        scorer.info = scorer._request("GET", "/v1/model", retries=0)
        return scorer

    @property
    def n_heads(self) -> int:
        return int(self.info.get("heads", 1))

    @property
    def batch_size(self) -> int:
        return int(self.info.get("max_pairs_per_request", 256))

    def score_with_std(self, prompts: Sequence, responses: Sequence) -> tuple[list[float], list[float]]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        means, stds = [], []
        for start in range(0, len(prompts), self.batch_size):
            pairs = [{"prompt": as_conversation(p), "response": r if isinstance(r, str) else as_messages(r)}
                     for p, r in zip(prompts[start:start + self.batch_size], responses[start:start + self.batch_size])]
            answer = self._request("POST", "/v1/score", json={"pairs": pairs})
            means += answer["rewards"]
            stds += answer.get("reward_stds", [0.0] * len(pairs))
        return means, stds

    def score(self, prompts: Sequence, responses: Sequence) -> list[float]:
        return self.score_with_std(prompts, responses)[0]

    __call__ = score

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, path: str, retries: int = RETRIES, **kwargs) -> dict:
        import httpx

        where = f"reward model {self.url}"
        for attempt in range(retries + 1):
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.HTTPError as err:
                if attempt < retries:
                    time.sleep(2 ** attempt)
                    continue
                raise InputError(f"{where}: not reachable ({type(err).__name__}: {err}); is `reward-model serve` "
                                 "running there?") from None
            if response.status_code == 503 and attempt < retries:
                time.sleep(2 ** attempt)
                continue
            return _json_or_error(response, where)
        raise AssertionError("unreachable")


def _json_or_error(response, where: str) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 401:
        raise InputError(f"{where}: the token was refused (401); set ${TOKEN_ENV} to the server's token")
    if response.status_code != 200 or not isinstance(body, dict):
        said = body.get("error") if isinstance(body, dict) else response.text[:200].strip()
        raise InputError(f"{where}: HTTP {response.status_code} ({said or 'no reason given'}); is it a "
                         "`reward-model serve` server?")
    return body


def base_url(url: str) -> str:
    """The server's root: a trailing / or an endpoint path (/v1/score, /get_reward) is dropped."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"reward model {url}: expected http://HOST:PORT or https://HOST:PORT")
    if parts.username or parts.password:
        raise InputError(f"reward model {parts.scheme}://{parts.hostname}: the URL holds a user name or password; "
                         f"it is recorded in run.json, so give the token in ${TOKEN_ENV} instead")
    path = parts.path.rstrip("/")
    for endpoint in ("/v1/score", "/get_reward", "/v1/model"):
        if path.endswith(endpoint):
            path = path[: -len(endpoint)]
    return f"{parts.scheme}://{parts.netloc}{path}"
