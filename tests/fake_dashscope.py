"""A local stand-in for DashScope's text-generation endpoint, scriptable per test.

It speaks the wire format the official SDK (dashscope 2.0.2) uses for
``AioGeneration.call(..., result_format="message")``: ``POST <base>/services/aigc/
text-generation/generation`` with ``Authorization: Bearer <key>`` and a JSON body
``{"model", "parameters", "input": {"messages"}}``; success is ``{"output": {"choices": [...]},
"usage", "request_id"}``, an error is a non-200 status with ``{"code", "message", "request_id"}``.

    with FakeDashScope(behaviours=["429", "ok"]) as srv:
        os.environ.update(srv.env())     # base URL and key for the code under test
        ...
        srv.requests                     # every request received, in order

Each request takes the next behaviour from the queue (then ``default``): ``ok`` answers five
interest tags derived from the prompt, ``429``, ``500`` and ``401`` answer those errors, ``slow``
answers ``ok`` after ``slow_s`` seconds (to trip a client timeout), ``malformed`` answers 200 with
text that holds no interest list. A wrong Bearer key always gets 401.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_PATH = "/api/v1"
GENERATION_PATH = API_PATH + "/services/aigc/text-generation/generation"
ERRORS = {
    "429": (429, "Throttling", "Requests rate limit exceeded, please try again later."),
    "500": (500, "InternalError", "An internal error has occured, please try again later."),
    "401": (401, "InvalidApiKey", "Invalid API-key provided."),
}
BEHAVIOURS = ("ok", "slow", "malformed", *ERRORS)


def default_reply(messages: list[dict]) -> str:
    """Five tagged phrases unique to the prompt, so a test can tell which prompt they answer."""
    tag = hashlib.sha1(messages[-1]["content"].encode("utf-8")).hexdigest()[:8]
    return "\n".join(f"<interest>topic {tag} number {i}</interest>" for i in range(1, 6))


class FakeDashScope:
    """A threaded HTTP server on 127.0.0.1 (random port) for the length of a ``with`` block."""

    def __init__(
        self,
        behaviours: Iterable[str] = (),
        default: str = "ok",
        delay_s: float = 0.0,
        slow_s: float = 5.0,
        api_key: str = "test-key",
        model_reply: Callable[[list[dict]], str] = default_reply,
    ) -> None:
        unknown = {b for b in [*behaviours, default] if b not in BEHAVIOURS}
        if unknown:
            raise ValueError(f"unknown behaviours {sorted(unknown)}; known: {BEHAVIOURS}")
        self.behaviours = deque(behaviours)
        self.default = default
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.api_key = api_key
        self.model_reply = model_reply
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests it was answering at once
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "use FakeDashScope in a with block"
        return f"http://127.0.0.1:{self._server.server_address[1]}{API_PATH}"

    def env(self) -> dict[str, str]:
        """Environment that points the SDK (and data.interests) at this server."""
        return {"DASHSCOPE_HTTP_BASE_URL": self.base_url, "DASHSCOPE_API_KEY": self.api_key}

    def prompts(self) -> list[list[dict]]:
        """The ``messages`` of every generation request received, in order."""
        with self._lock:
            return [r["body"]["input"]["messages"] for r in self.requests if r["body"]]

    def _next(self, request: dict) -> str:
        with self._lock:
            behaviour = self.behaviours.popleft() if self.behaviours else self.default
            request["behaviour"] = behaviour
            self.requests.append(request)
        return behaviour

    def _count(self, change: int) -> None:
        with self._lock:
            self.in_flight += change
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def __enter__(self) -> FakeDashScope:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            counted = False  # this request is in fake.in_flight (do_POST until its answer)

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: dict) -> None:
                self._done()
                body = json.dumps(payload).encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            def do_POST(self) -> None:
                fake._count(+1)
                self.counted = True
                try:
                    self._answer()
                finally:
                    self._done()

            def _done(self) -> None:
                """A request stops counting as in flight once its answer is ready: the client
                may send its next one as soon as the answer is written, before this thread
                gets back to ``do_POST`` (on a loaded machine the old count saw one too many)."""
                if self.counted:
                    self.counted = False
                    fake._count(-1)

            def _answer(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = None
                auth = self.headers.get("Authorization", "")
                behaviour = fake._next({"path": self.path, "authorization": auth, "body": body})
                request_id = f"fake-{len(fake.requests)}"
                time.sleep(fake.delay_s + (fake.slow_s if behaviour == "slow" else 0.0))
                if self.path != GENERATION_PATH or not isinstance(body, dict):
                    self._send(404, {"code": "NotFound", "message": self.path, "request_id": ""})
                    return
                if auth != f"Bearer {fake.api_key}":
                    behaviour = "401"
                if behaviour in ERRORS:
                    status, code, message = ERRORS[behaviour]
                    self._send(status, {"code": code, "message": message, "request_id": request_id})
                    return
                messages = body["input"]["messages"]
                content = (
                    "Sorry, I am not able to describe this shopper."
                    if behaviour == "malformed"
                    else fake.model_reply(messages)
                )
                n_in = sum(len(m["content"].split()) for m in messages)
                n_out = len(content.split())
                self._send(
                    200,
                    {
                        "output": {
                            "choices": [
                                {
                                    "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content},
                                }
                            ]
                        },
                        "usage": {
                            "input_tokens": n_in,
                            "output_tokens": n_out,
                            "total_tokens": n_in + n_out,
                        },
                        "request_id": request_id,
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True  # a slow reply never holds up shutdown
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
