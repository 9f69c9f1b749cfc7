"""A stand-in for ``vllm serve`` in the tests: parses the same command line, listens on the given
loopback port, checks the API key, answers ``/health`` and ``/v1/completions`` (plain and
streamed) with a deterministic text that names the model it was asked for, and writes its
command line and every request it got to ``--fake-log`` (one JSON object per line).

Triggers (a stop string the test sends): ``FAIL400`` a 400 in vLLM's error shape, ``FAIL500`` a
500, ``FAILMID`` an error event after the first streamed chunk.
"""

from __future__ import annotations

import argparse
import json
import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("model")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--api-key")
    parser.add_argument("--served-model-name")
    parser.add_argument("--lora-modules", nargs="*", default=[])
    parser.add_argument("--fake-log")
    args, _ = parser.parse_known_args()
    loras = {m.split("=", 1)[0] for m in args.lora_modules}
    names = {args.served_model_name, *loras}

    def write(record: dict) -> None:
        with open(args.fake_log, "a") as f:
            f.write(json.dumps(record) + "\n")

    write({"argv": sys.argv})
    app = FastAPI()

    def error(status: int, message: str) -> JSONResponse:  # vLLM's (older) error shape
        return JSONResponse({"object": "error", "message": message, "type": "BadRequestError", "param": None,
                             "code": status}, status_code=status)

    @app.get("/health")
    async def health() -> dict:
        return {}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        write({"path": "/v1/completions", "auth": request.headers.get("authorization"), "body": body})
        if request.headers.get("authorization") != f"Bearer {args.api_key}":
            return error(401, "Unauthorized")
        if body.get("model") not in names:
            return error(404, f"The model `{body.get('model')}` does not exist.")
        stops = body.get("stop") or []
        if "FAIL400" in stops:
            return error(400, "this request is not valid for the fake engine")
        if "FAIL500" in stops:
            return error(500, "the fake engine broke")
        prompt = body["prompt"]
        texts = [f"answer {i} from {body['model']} to {len(prompt)} tokens" for i in range(body.get("n", 1))]
        tokens = sum(len(t.split()) + 1 for t in texts)
        usage = {"prompt_tokens": len(prompt), "completion_tokens": tokens, "total_tokens": len(prompt) + tokens}
        if not body.get("stream"):
            return {"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": body["model"],
                    "choices": [{"index": i, "text": t, "logprobs": None, "finish_reason": "stop",
                                 "stop_reason": None} for i, t in enumerate(texts)], "usage": usage}

        def events():
            def chunk(choices, usage=None):
                return "data: " + json.dumps({"id": "cmpl-fake", "object": "text_completion", "created": 1,
                                              "model": body["model"], "choices": choices, "usage": usage}) + "\n\n"

            for i, text in enumerate(texts):
                words = text.split(" ")
                for k, word in enumerate(words):
                    last = k == len(words) - 1
                    yield chunk([{"index": i, "text": word if k == 0 else " " + word, "logprobs": None,
                                  "finish_reason": "stop" if last else None}])
                    if "FAILMID" in stops:
                        yield "data: " + json.dumps({"error": {"message": "the fake engine broke mid-stream",
                                                               "type": "InternalServerError", "code": 500}}) + "\n\n"
                        return
            if (body.get("stream_options") or {}).get("include_usage"):
                yield chunk([], usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
