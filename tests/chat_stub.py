"""An adversarial chat endpoint for the arena's browser tests: it speaks the OpenAI streaming protocol
and answers what a hostile or slow model would (script payloads, a long answer at a set pace).

Not a stand-in for a real server's behaviour (tests/llama_server.py is the real one): it exists
because no real model can be made to answer an exact XSS payload. It records, per request, how many
chunks it sent and whether the client hung up before the end (a cancelled generation).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _labeling_seed import PAYLOADS

ANSWERS = {"evil": "\n\n".join(PAYLOADS) + "\n\nplain <b>bold?</b>", "slow": " word" * 300}
SLOW_PACE_S = 0.05


class ChatStub:
    def __init__(self):
        self.requests: list[dict] = []  # {"model", "sent", "hung_up"}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                record = {"model": body["model"], "sent": 0, "hung_up": False}
                stub.requests.append(record)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                text = ANSWERS.get(body["model"], "ok")
                pieces = [text[i:i + 8] for i in range(0, len(text), 8)][: body.get("max_tokens", 10**6)]
                try:
                    for piece in pieces:
                        chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                        record["sent"] += 1
                        if body["model"] == "slow":
                            time.sleep(SLOW_PACE_S)
                    end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                    self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    record["hung_up"] = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
