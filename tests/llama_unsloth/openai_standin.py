"""A stand-in for ``vllm serve`` in tests: the OpenAI completions API on 127.0.0.1, generating with transformers.

vLLM itself cannot be installed here (no GPU, no network on the GPU machine). This server speaks the same
API (``POST /v1/completions`` with ``stop``, ``stream``, ``usage``; ``GET /v1/models``; 404 for another model
name) and generates with the tiny model through the transformers backend, so the real ``openai`` client and
``ServedLLM`` can be tested end to end. It records every prompt and stop list it receives. A ``response_format``
with a JSON schema is decoded as vLLM does, constrained to the schema (here by the engine's own constraint).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional


class OpenAIStandIn:
    """Serves one model under ``served_name``; ``fail_next`` answers that many requests with 503 first."""

    def __init__(self, model_path: str, served_name: str = "tiny") -> None:
        from llama_unsloth import UnslothLLM

        self.engine = UnslothLLM(
            model_name=model_path,
            backend="transformers",
            load_in_4bit=False,
            prompt_format="chat",
            set_global_tokenizer=False,
        )
        self.served_name = served_name
        self.prompts: List[str] = []
        self.stops: List[List[str]] = []
        self.requests = 0
        self.bodies: List[Dict[str, Any]] = []  # every request's JSON body, as received
        self.fail_next = 0
        self.delay = 0.0  # seconds added to every answer, so a test can interrupt a run in the middle
        self.in_flight = 0
        self.max_in_flight = 0  # how many requests were being answered at once, at most
        self._count = threading.Lock()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> OpenAIStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def generate(
        self, prompt: str, max_tokens: int, stop: List[str], response_format: Optional[Dict[str, Any]] = None
    ) -> Dict[str, Any]:
        """What vLLM returns: new text up to (not including) the first stop string, special tokens skipped."""
        schema = (response_format or {}).get("json_schema", {}).get("schema")
        constraint = {"json_schema": schema} if schema is not None else {}
        with self._count:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            with self._lock:
                self.engine.stop = list(stop)
                response = self.engine.complete(prompt, formatted=True, max_new_tokens=max_tokens, **constraint)
        finally:
            with self._count:
                self.in_flight -= 1
        text = response.raw["generated"]
        for marker in stop:
            if marker in text:
                text = text[: text.index(marker)]
        for special in self.engine.tokenizer.all_special_tokens:
            text = text.replace(special, "")
        return {
            "text": text,
            "prompt_tokens": response.raw["prompt_tokens"],
            "completion_tokens": response.raw["completion_tokens"],
        }

    def _handler(self) -> type:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _json(self, status: int, body: Dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    self._json(
                        200,
                        {
                            "object": "list",
                            "data": [
                                {"id": standin.served_name, "object": "model", "created": 0, "owned_by": "standin"}
                            ],
                        },
                    )
                else:
                    self._json(404, {"error": {"message": "not found", "type": "NotFoundError"}})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                standin.requests += 1
                standin.bodies.append(body)
                if standin.fail_next > 0:
                    standin.fail_next -= 1
                    self._json(503, {"error": {"message": "Service Unavailable", "type": "ServiceUnavailableError"}})
                    return
                if body.get("model") != standin.served_name:
                    self._json(
                        404,
                        {
                            "error": {
                                "message": f"The model `{body.get('model')}` does not exist.",
                                "type": "NotFoundError",
                            }
                        },
                    )
                    return
                stop = body.get("stop") or []
                stop = [stop] if isinstance(stop, str) else list(stop)
                standin.prompts.append(body["prompt"])
                standin.stops.append(stop)
                result = standin.generate(
                    body["prompt"], int(body.get("max_tokens") or 16), stop, body.get("response_format")
                )
                usage = {
                    "prompt_tokens": result["prompt_tokens"],
                    "completion_tokens": result["completion_tokens"],
                    "total_tokens": result["prompt_tokens"] + result["completion_tokens"],
                }
                base = {
                    "id": "cmpl-standin",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": standin.served_name,
                }
                if not body.get("stream"):
                    self._json(
                        200,
                        {
                            **base,
                            "choices": [
                                {"index": 0, "text": result["text"], "finish_reason": "stop", "logprobs": None}
                            ],
                            "usage": usage,
                        },
                    )
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                text = result["text"]
                pieces = [text[: len(text) // 2], text[len(text) // 2 :]]
                for piece in pieces:
                    chunk = {**base, "choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler
