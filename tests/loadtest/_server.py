"""A small aiohttp server with known behaviour, for the load-test tests.

Run: ``python tests/loadtest/_server.py --port 0 [--token T] [--max-run-s S]``; it prints
``PORT <n>`` once it listens on 127.0.0.1 and exits after ``--max-run-s`` seconds at most.
Every path answers POST; the request index comes from the ``X-Servewise-Request`` header.

- ``/v1/completions``, ``/predict``: 200; stream an OpenAI SSE answer when the body asks
  ``stream``; log the request (GET ``/_log`` returns the log).
- ``/sse?first_s=&gap_s=&tokens=&tiny=&ndjson=``: a stream that waits ``first_s`` before the
  first token event and ``gap_s`` between events (tiny lines with ``tiny=1``; NDJSON with
  ``ndjson=1``); comments, blank lines and a final empty chunk are no tokens.
- ``/lock?service_s=``: one request at a time (FIFO), each ``service_s`` long.
- ``/by-id``: sleeps 0.4 s when index % 4 == 1, else 0.01 · (index % 7) s.
- ``/status``: by index % 4: 429; 500; 200 with ``X-Servewise-Cache: hit``; 200 from replica r1.
- ``/slow?sleep_s=``: sleeps, then 200.
- ``/fast``: 200 at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiohttp import web

LOG: list[dict] = []


def _index(request: web.Request) -> int:
    return int(request.headers.get("X-Servewise-Request", "0"))


async def _sse_openai(request: web.Request, n: int) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Servewise-Replica": "r0"})
    await resp.prepare(request)
    for j in range(n):
        await asyncio.sleep(0.01)
        chunk = {"choices": [{"index": 0, "text": f"t{j} ", "finish_reason": None}]}
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
    final = {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}
    await resp.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
    await resp.write_eof()
    return resp


async def api(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    LOG.append({"path": request.path, "headers": dict(request.headers), "body": body})
    token = request.app["token"]
    if token is not None and request.headers.get("Authorization") != f"Bearer {token}":
        return web.json_response({"error": "bad token"}, status=401)
    if body.get("stream"):
        return await _sse_openai(request, int(body.get("max_tokens", 1)))
    return web.json_response({"ok": True, "index": _index(request)}, headers={"X-Servewise-Replica": "r0"})


async def sse(request: web.Request) -> web.StreamResponse:
    await request.read()
    q = request.query
    first_s, gap_s = float(q.get("first_s", "0.3")), float(q.get("gap_s", "0.05"))
    tokens, tiny, ndjson = int(q.get("tokens", "6")), q.get("tiny") == "1", q.get("ndjson") == "1"
    ctype = "application/x-ndjson" if ndjson else "text/event-stream"
    resp = web.StreamResponse(headers={"Content-Type": ctype})
    await resp.prepare(request)
    if not ndjson:
        await resp.write(b": warming up\n\nevent: message\nid: 0\n\n")  # no tokens
    await asyncio.sleep(first_s)
    for j in range(tokens):
        if j:
            await asyncio.sleep(gap_s)
        if ndjson:
            line = b'{"text": "x"}\n'
        elif tiny:
            line = b"data: x\n\n"
        else:
            line = f"data: {json.dumps({'choices': [{'text': f'token{j} ' * 4}]})}\n\n".encode()
        await resp.write(line)
    if not ndjson:
        await resp.write(b'data: {"choices": [{"text": "", "finish_reason": "length"}]}\n\ndata: [DONE]\n\n')
    await resp.write_eof()
    return resp


async def lock(request: web.Request) -> web.Response:
    await request.read()
    service_s = float(request.query.get("service_s", "0.2"))
    async with request.app["lock"]:
        await asyncio.sleep(service_s)
    return web.json_response({"index": _index(request)})


async def by_id(request: web.Request) -> web.Response:
    await request.read()
    i = _index(request)
    await asyncio.sleep(0.4 if i % 4 == 1 else 0.01 * (i % 7))
    return web.json_response({"index": i})


async def status(request: web.Request) -> web.Response:
    await request.read()
    i = _index(request)
    if i % 4 == 0:
        return web.json_response({"error": "busy"}, status=429)
    if i % 4 == 1:
        return web.Response(status=500, text="boom")
    if i % 4 == 2:
        return web.json_response({"index": i}, headers={"X-Servewise-Cache": "hit"})
    return web.json_response({"index": i}, headers={"X-Servewise-Replica": "r1", "X-Servewise-Cache": "miss"})


async def slow(request: web.Request) -> web.Response:
    await request.read()
    await asyncio.sleep(float(request.query.get("sleep_s", "5")))
    return web.json_response({"index": _index(request)})


async def fast(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"index": _index(request)})


async def log(request: web.Request) -> web.Response:
    return web.json_response(LOG)


async def main(port: int, token: str | None, max_run_s: float) -> None:
    app = web.Application()
    app["token"] = token
    app["lock"] = asyncio.Lock()
    app.add_routes(
        [
            web.post("/v1/completions", api),
            web.post("/predict", api),
            web.post("/sse", sse),
            web.post("/lock", lock),
            web.post("/by-id", by_id),
            web.post("/status", status),
            web.post("/slow", slow),
            web.post("/fast", fast),
            web.get("/_log", log),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=2048)
    await site.start()
    sockets = site._server.sockets  # type: ignore[union-attr]
    print(f"PORT {sockets[0].getsockname()[1]}", flush=True)
    await asyncio.sleep(max_run_s)
    await runner.cleanup()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token", default=None)
    ap.add_argument("--max-run-s", type=float, default=300.0)
    a = ap.parse_args()
    asyncio.run(main(a.port, a.token, a.max_run_s))
    sys.exit(0)
