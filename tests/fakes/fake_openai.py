"""A fake OpenAI-compatible chat server: ``POST /v1/chat/completions`` in the OpenAI wire format.

Used by the tests (as the ``fake_openai`` fixture) and by ``bench/bench_ops.py``, which runs it
in its own process so its CPU is not charged to the client::

    python -m tests.fakes.fake_openai --latency 0.2 --share-429 0.05
    # prints the base URL (http://127.0.0.1:PORT/v1) on stdout, serves until killed
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import time
from pathlib import Path

import orjson
from aiohttp import web

from tests.fakes._server import (
    MALFORMED,
    FakeRequest,
    FakeServer,
    FaultPlan,
    count_tokens,
    echo_answer,
)

_ids = itertools.count()
# A 200 that is not a chat completion, by fault.
MALFORMED_BODIES = {
    "badjson": b'{"id": "chatcmpl-9", "object": "chat.completion", "choices": [{"index": 0, "mess',
    "nochoices": b'{"id": "chatcmpl-9", "object": "chat.completion", "usage": {"prompt_tokens": 5}}',
    "notutf8": b'{"choices": [{"message": {"content": "\xff\xfe\xfa"}}]}',
}


class FakeOpenAI(FakeServer):
    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)

    async def _chat(self, request: web.Request) -> web.Response:
        if (
            self.api_key is not None
            and request.headers.get("Authorization") != f"Bearer {self.api_key}"
        ):
            # Quoting what was sent, as careless gateways do: the client must not repeat it.
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return _error(401, f"Incorrect API key provided: {sent}.", "invalid_api_key")
        body = orjson.loads(await request.read())
        fault = self.next_fault(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        self.record(request, body, fault)
        await self.delay(fault)
        if fault == "429":
            return _error(
                429, "Rate limit reached for requests.", "rate_limit_exceeded", self.retry_headers()
            )
        if fault == "500":
            return _error(
                500, "The server had an error while processing your request.", "server_error"
            )
        if fault in ("leak400", "leak500"):
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            status = 400 if fault == "leak400" else 500
            return _error(status, f"Request with API key {key} could not be served.", "leak")
        if fault in MALFORMED:
            return web.Response(body=MALFORMED_BODIES[fault], content_type="application/json")
        messages = tuple((m["role"], m["content"]) for m in body["messages"])
        text = self.answer(FakeRequest(messages, body))
        finish = "stop"
        if fault == "length":
            text, finish = text[: max(1, len(text) // 2)], "length"
        prompt_tokens = sum(count_tokens(c) for _, c in messages)
        completion_tokens = count_tokens(text)
        payload = {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _error(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> web.Response:
    payload = {"error": {"message": message, "type": code, "param": None, "code": code}}
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--share-429", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keyed-faults",
        action="store_true",
        help="the same request meets the same faults in every client (see FaultPlan.keyed)",
    )
    parser.add_argument(
        "--answer", default="", help="module:function mapping a FakeRequest to the answer text"
    )
    parser.add_argument(
        "--answer-table", type=Path, help="JSON {sha256(prompt): answer} served before --answer"
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    plan = FaultPlan(
        share={"429": args.share_429},
        retry_after_s=args.retry_after,
        seed=args.seed,
        keyed=args.keyed_faults,
    )
    answer = echo_answer
    if args.answer:
        module, _, function = args.answer.partition(":")
        answer = getattr(importlib.import_module(module), function)
    if args.answer_table:
        from tests.fakes.answers import AnswerTable

        answer = AnswerTable.load(args.answer_table, answer)
    server = FakeOpenAI(answer, latency_s=args.latency, faults=plan, log_requests=False).start()
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
