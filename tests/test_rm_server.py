"""`reward-model serve`: OpenRLHF's protocol and our JSON API from plain HTTP clients, against in-process scoring.

One real server (a subprocess started the way a user starts it) serves a tiny reward model built here;
the same model loaded in-process with RewardScorer is the reference every answer must equal.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from prefloop.net import free_port
from reward_model.testing import REFERENCE_PROMPTS, REFERENCE_RESPONSES, build_tiny_reward_model

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789abcdef"
pytestmark = pytest.mark.usefixtures("tiny_cpu")


def _env(**extra) -> dict:
    """A subprocess's environment: this checkout's code, fp32, one thread, no token unless given."""
    env = {k: v for k, v in os.environ.items() if k != "PREFLOOP_RM_TOKEN"}
    return {**env, "PYTHONPATH": str(ROOT), "PREFLOOP_CPU_BF16": "0", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            **extra}


def _serve_command(*args) -> list[str]:
    return [sys.executable, "-m", "reward_model.cli", "serve", *args]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, smollm2_dir):
    return build_tiny_reward_model(tmp_path_factory.mktemp("rm") / "rm", seed=0)


@pytest.fixture(scope="module")
def server(rm_dir, tmp_path_factory):
    """http://127.0.0.1:PORT of a running server: batches of 4, 200 ms to gather, 64 KiB bodies, 16 pairs."""
    token_file = tmp_path_factory.mktemp("secret") / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    proc = subprocess.Popen(_serve_command("--model", str(rm_dir), "--port", str(port), "--token-file",
                                           str(token_file), "--dtype", "float32", "--max-batch", "4",
                                           "--batch-wait-ms", "200", "--max-body-mb", "0.0625",
                                           "--max-pairs-per-request", "16"),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                assert json.load(response) == {"status": "ok"}
                break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the server did not start: {proc.stdout.read()}")
            time.sleep(0.5)
    yield url
    proc.terminate()  # SIGTERM: uvicorn stops cleanly, the worker thread is joined, exit 0
    assert proc.wait(timeout=60) == 0, proc.stdout.read()


@pytest.fixture(scope="module")
def scorer(rm_dir):
    import torch

    from reward_model.scorer import RewardScorer

    return RewardScorer.from_pretrained(rm_dir, dtype=torch.float32, batch_size=4)


def post(url: str, body, headers: dict | None = None, raw: bytes | None = None) -> tuple[int, dict]:
    """(status, JSON answer) of a POST from urllib, the plainest HTTP client there is."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def rendered(scorer, prompt: str, response: str) -> str:
    """What OpenRLHF sends: the prompt and response rendered with the chat template, special tokens kept."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return scorer.tokenizer.apply_chat_template(messages, tokenize=False)


def test_openrlhf_request_gets_the_in_process_rewards(server, scorer):
    queries = [rendered(scorer, p, r) for p, r in zip(REFERENCE_PROMPTS, REFERENCE_RESPONSES)]
    status, answer = post(server + "/get_reward", {"query": queries, "prompts": REFERENCE_PROMPTS,
                                                   "labels": [""] * len(queries)}, BEARER)
    assert status == 200
    expected = scorer.score(REFERENCE_PROMPTS, REFERENCE_RESPONSES)
    assert answer["rewards"] == pytest.approx(expected, abs=1e-5)
    assert answer["scores"] == answer["rewards"] and answer["extra_logs"] == {}
    assert max(expected) - min(expected) > 0.5  # the model tells these answers apart: equality means something


def test_openrlhf_url_with_the_token_as_password(server, scorer):
    # OpenRLHF's client sets no headers; `--remote_rm_url http://rm:TOKEN@host/get_reward` becomes Basic auth
    import httpx

    authed = server.replace("http://", f"http://openrlhf:{TOKEN}@") + "/get_reward"
    answer = httpx.post(authed, json={"query": [rendered(scorer, "Say hello.", "Hello!")]}, timeout=120)
    assert answer.status_code == 200
    assert answer.json()["rewards"] == pytest.approx(scorer.score(["Say hello."], ["Hello!"]), abs=1e-5)


def test_json_api_single_and_batch(server, scorer):
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    status, one = post(server + "/v1/score", {"prompt": conversation, "response": "Blue."}, BEARER)
    assert status == 200 and set(one) == {"reward"}
    assert one["reward"] == pytest.approx(scorer.score([conversation], ["Blue."])[0], abs=1e-5)
    pairs = [{"prompt": p, "response": r} for p, r in zip(REFERENCE_PROMPTS, REFERENCE_RESPONSES)]
    status, many = post(server + "/v1/score", {"pairs": pairs}, BEARER)
    assert status == 200
    assert many["rewards"] == pytest.approx(scorer.score(REFERENCE_PROMPTS, REFERENCE_RESPONSES), abs=1e-5)
    assert post(server + "/v1/score", {"pairs": []}, BEARER) == (200, {"rewards": []})


def test_concurrent_requests_share_forward_passes(server, scorer):
    before = _model_info(server)
    answers: dict[int, dict] = {}

    def one(i: int) -> None:
        answers[i] = post(server + "/v1/score", {"prompt": REFERENCE_PROMPTS[i], "response": REFERENCE_RESPONSES[i]},
                          BEARER)[1]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = _model_info(server)
    assert after["pairs"] - before["pairs"] == 8
    assert after["batches"] - before["batches"] < 8  # gathered within 200 ms, up to 4 pairs a forward
    for i in range(8):
        assert answers[i]["reward"] == pytest.approx(scorer.score([REFERENCE_PROMPTS[i]], [REFERENCE_RESPONSES[i]])[0],
                                                     abs=1e-5)


def _model_info(server: str) -> dict:
    request = urllib.request.Request(server + "/v1/model", headers=BEARER)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"},
                                     {"Authorization": TOKEN},
                                     {"Authorization": "Basic " + base64.b64encode(b"user:wrong").decode()}])
def test_a_missing_or_wrong_token_gets_401(server, headers):
    for path, body in (("/get_reward", {"query": ["x"]}), ("/v1/score", {"prompt": "a", "response": "b"})):
        status, answer = post(server + path, body, headers)
        assert status == 401 and "token" in answer["error"]
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(urllib.request.Request(server + "/v1/model", headers=headers), timeout=30)


@pytest.mark.parametrize("path,body,raw,message", [
    ("/get_reward", None, b"{not json", "not JSON"),
    ("/get_reward", None, b"\xff\xfe", "not JSON"),
    ("/get_reward", {"queries": ["x"]}, None, "'query'"),
    ("/get_reward", {"query": [1, 2]}, None, "list of strings"),
    ("/get_reward", [1, 2], None, "'query'"),
    ("/v1/score", {"prompt": "a"}, None, "'prompt' and 'response'"),
    ("/v1/score", {"prompt": [{"role": "user", "content": 7}], "response": "b"}, None, "body.prompt[0]"),
    ("/v1/score", {"prompt": [], "response": "b"}, None, "non-empty"),
    ("/v1/score", {"pairs": "x"}, None, "pairs: expected a list"),
    ("/v1/score", {"pairs": [{"prompt": "a", "response": None}]}, None, "pairs[0].response"),
    ("/v1/score", None, b"[" * 60_000, "not JSON"),
])
def test_a_malformed_body_gets_400_with_one_line(server, path, body, raw, message):
    status, answer = post(server + path, body, BEARER, raw=raw)
    assert status == 400 and message in answer["error"] and "\n" not in answer["error"]


def test_limits_get_413_and_unknown_paths_a_json_404(server):
    status, answer = post(server + "/get_reward", {"query": ["x" * 70_000]}, BEARER)
    assert status == 413 and "--max-body-mb" in answer["error"]
    status, answer = post(server + "/get_reward", {"query": ["x"] * 17}, BEARER)
    assert status == 413 and "at most 16" in answer["error"]
    status, answer = post(server + "/v2/nothing", {}, BEARER)
    assert status == 404 and answer == {"error": "Not Found"}
    assert post(server + "/health", {}, BEARER)[0] == 405


def test_remote_scorer_scores_like_the_in_process_one(server, scorer, monkeypatch):
    from prefloop.errors import InputError
    from reward_model.remote import RemoteRewardScorer
    from reward_model.scorer import load_reward

    monkeypatch.setenv("PREFLOOP_RM_TOKEN", TOKEN)
    remote = load_reward(server + "/")
    assert isinstance(remote, RemoteRewardScorer) and remote.n_heads == 1
    prompts = REFERENCE_PROMPTS * 3  # 24 pairs: two requests of at most 16
    responses = REFERENCE_RESPONSES * 3
    assert remote(prompts, responses) == pytest.approx(scorer.score(prompts, responses), abs=1e-5)
    assert remote.score_with_std(prompts[:2], responses[:2])[1] == [0.0, 0.0]
    monkeypatch.setenv("PREFLOOP_RM_TOKEN", "wrong-token-0123456789")
    with pytest.raises(InputError, match=r"token was refused \(401\); set \$PREFLOOP_RM_TOKEN"):
        load_reward(server)
    with pytest.raises(InputError, match="not reachable"):
        load_reward(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InputError, match="holds a user name or password"):
        load_reward(server.replace("http://", f"http://u:{TOKEN}@"))


def test_align_eval_judges_through_the_server(server, tiny_model_dir, rm_dir, tmp_path, monkeypatch):
    """`align eval --reward-model http://...` gives the reward the local reward model gives."""
    from align.evaluation.evaluate import main

    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me about topic {i}."}) + "\n" for i in range(4)))
    common = ["--policies", tiny_model_dir, "--reference", tiny_model_dir, "--prompts", str(prompts),
              "--best-of", "1", "--max-new-tokens", "6", "--report-to", "none"]
    monkeypatch.setenv("PREFLOOP_RM_TOKEN", TOKEN)
    assert main([*common, "--reward-model", server, "--output-dir", str(tmp_path / "remote")]) == 0
    assert main([*common, "--reward-model", str(rm_dir), "--output-dir", str(tmp_path / "local")]) == 0
    remote, local = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("remote", "local"))
    assert remote["reference_stats"]["mean_reward"] == pytest.approx(local["reference_stats"]["mean_reward"], abs=1e-4)
    assert remote["policies"][0]["mean_reward"] == pytest.approx(local["policies"][0]["mean_reward"], abs=1e-4)


def test_a_trainer_refuses_an_unreachable_server_in_one_line(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "align.cli", "online-dpo", "--reward-model", url, "--prompts",
                           str(prompts), "--output-dir", str(tmp_path / "out"), "--max-steps", "1"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"align: error: reward model {url}: not reachable")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,env,message", [
    ([], {}, "no token: set $PREFLOOP_RM_TOKEN or --token-file"),
    ([], {"PREFLOOP_RM_TOKEN": "short"}, "at least 16 needed"),
    (["--no-auth", "--host", "0.0.0.0"], {}, "only on a loopback host"),
    (["--token-file", "/nonexistent/token"], {}, "no such file"),
])
def test_serve_refuses_to_start_without_a_token_in_one_line(rm_dir, args, env, message):
    done = subprocess.run(_serve_command("--model", str(rm_dir), "--port", str(free_port()), *args),
                          env=_env(**env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
