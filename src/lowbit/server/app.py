"""The ASGI app (Starlette): OpenAI routes, bearer auth, body/prompt/queue limits, SSE streaming.

Every failure is an OpenAI-style error JSON with a 4xx/5xx status; the engine worker never sees a request that
failed validation, so a bad request cannot take the server down.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import time

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from . import schemas as S
from .engine import Engine, SamplingParams
from .scheduler import QueueFull, Scheduler

log = logging.getLogger("lowbit.server")

MAX_BODY_BYTES = 4 << 20  # a 4 MiB JSON body is far beyond any context we serve
DISCONNECT_POLL_S = 0.25


def _error(e: S.APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


class BearerAuth:
    """Pure ASGI middleware (streaming-safe): every HTTP route except /health needs `Authorization: Bearer KEY`.
    /health stays open so load balancers and Ray/k8s probes can check liveness without the secret."""

    def __init__(self, app, api_key: str | None):
        self.app, self.key = app, (api_key.encode() if api_key else None)

    async def __call__(self, scope, receive, send):
        if self.key is None or scope["type"] != "http" or scope["path"] == "/health":
            return await self.app(scope, receive, send)
        auth = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
            err = S.APIError(401, "Incorrect API key provided (send Authorization: Bearer <key>)",
                             type="authentication_error", code="invalid_api_key")
            return await _error(err)(scope, receive, send)
        return await self.app(scope, receive, send)


async def _read_json(request: Request) -> dict:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise S.APIError(413, f"request body is {declared} bytes; the limit is {MAX_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise S.APIError(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as e:
        raise S.APIError(400, f"We could not parse the JSON body of your request: {e}") from None
    if not isinstance(body, dict):
        raise S.APIError(400, "the JSON body must be an object")
    return body


def _validate(model_cls, body: dict):
    try:
        return model_cls.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(x) for x in first["loc"]) or None
        msg = first["msg"].removeprefix("Value error, ")
        raise S.APIError(400, f"Invalid value for '{param}': {msg}" if param else msg, param=param) from None


class Server:
    """Holds the engine and scheduler; its methods are the route handlers."""

    def __init__(self, engine: Engine, scheduler: Scheduler):
        self.engine, self.sched = engine, scheduler
        self.created = int(time.time())

    def _check_model(self, name: str) -> None:
        if name != self.engine.model_id:
            raise S.APIError(404, f"The model '{name}' does not exist (this server serves "
                                  f"'{self.engine.model_id}')", param="model", code="model_not_found")

    def _params(self, req: S._Sampling, n_prompt: int) -> SamplingParams:
        ctx = self.engine.n_ctx
        if n_prompt == 0:
            raise S.APIError(400, "the prompt is empty", param="prompt")
        if n_prompt >= ctx:
            raise S.APIError(400, f"This model's maximum context length is {ctx} tokens; your prompt has "
                                  f"{n_prompt} tokens", param="messages" if isinstance(req, S.ChatRequest)
                             else "prompt", code="context_length_exceeded")
        room = ctx - n_prompt
        max_tokens = req.max_tokens if req.max_tokens is not None else room
        if max_tokens > room:
            raise S.APIError(400, f"This model's maximum context length is {ctx} tokens; you requested "
                                  f"{n_prompt + max_tokens} tokens ({n_prompt} in the prompt, {max_tokens} for "
                                  f"the completion)", param="max_tokens", code="context_length_exceeded")
        if req.top_logprobs is not None and not (self.sched.batched and hasattr(self.engine, "token_str")):
            raise S.APIError(400, "logprobs need the batched scheduler of lowbit's engine (not --no-batching)",
                             param="logprobs")
        return SamplingParams(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                              presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
                              stop=list(req.stop or []), logprobs=req.top_logprobs, echo=req.echo)

    def _submit(self, ids, params):
        try:
            return self.sched.submit(ids, params)
        except QueueFull as e:
            raise S.APIError(503, f"server is busy: {e}; retry later", type="server_error",
                             code="server_busy") from None

    # -- routes ---------------------------------------------------------------------------------------------
    async def health(self, request: Request):
        return JSONResponse({"status": "ok", "model": self.engine.model_id, **self.sched.load})

    async def models(self, request: Request):
        return JSONResponse({"object": "list", "data": [
            {"id": self.engine.model_id, "object": "model", "created": self.created, "owned_by": "lowbit"}]})

    async def completions(self, request: Request):
        req = _validate(S.CompletionRequest, await _read_json(request))
        self._check_model(req.model)
        if isinstance(req.prompt, str):
            ids = await asyncio.to_thread(self.engine.encode, req.prompt)
            prompt_text = req.prompt
        else:
            ids = list(req.prompt)
            vocab = getattr(self.engine, "vocab_size", None)
            bad = [t for t in ids if t < 0 or (vocab is not None and t >= vocab)]
            if bad:
                raise S.APIError(400, f"prompt token id {bad[0]} is outside the vocabulary (size {vocab})",
                                 param="prompt")
            detok = getattr(self.engine, "detokenize", None)
            prompt_text = await asyncio.to_thread(detok, ids) if (req.echo and detok) else ""
        return await self._respond(request, req, ids, chat=False, echo_text=prompt_text if req.echo else None)

    async def chat(self, request: Request):
        req = _validate(S.ChatRequest, await _read_json(request))
        self._check_model(req.model)
        try:
            ids = await asyncio.to_thread(self.engine.chat_ids, req.plain_messages())
        except ValueError as e:
            raise S.APIError(400, str(e), param="messages") from None
        return await self._respond(request, req, ids, chat=True)

    async def _respond(self, request: Request, req, ids: list[int], chat: bool, echo_text: str | None = None):
        params = self._params(req, len(ids))
        hs = self._submit_n(ids, params, req.n)
        rid = S.new_id("chatcmpl" if chat else "cmpl")
        model = self.engine.model_id
        lps = [_LogprobFormat(self.engine, chat, ids, echo_text) if params.logprobs is not None else None
               for _ in hs]
        if req.stream:
            return StreamingResponse(self._sse(hs, rid, model, chat, req.include_usage, echo_text, lps),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            got = await asyncio.gather(*(self._collect(request, h) for h in hs))
        finally:
            for h in hs:
                h.cancel()
        first = got[0][1]
        u = S.usage(first.prompt_tokens, sum(d.completion_tokens for _, d, _ in got), first.cached_tokens)
        body = None
        for i, (text, done, entries) in enumerate(got):
            b = (S.chat_body(rid, model, text, done.finish_reason, u) if chat
                 else S.completion_body(rid, model, (echo_text or "") + text, done.finish_reason, u, chunk=False))
            choice = b["choices"][0]
            choice["index"] = i
            if lps[i] is not None:
                choice["logprobs"] = await asyncio.to_thread(lps[i].whole, entries)
            if body is None:
                body = b
            else:
                body["choices"].append(choice)
        return JSONResponse(body)

    def _submit_n(self, ids, params, n: int) -> list:
        """n sequences of one prompt (the 2nd.. copy its prefill from the 1st: the prompt cache's live entries);
        with a seed, choice i samples with seed + i, so it equals a lone request with that seed."""
        hs = []
        try:
            for i in range(n):
                seed = params.seed + i if params.seed is not None else None
                hs.append(self._submit(ids, dataclasses.replace(params, seed=seed)))
        except S.APIError:
            for h in hs:
                h.cancel()
            raise
        return hs

    async def _collect(self, request: Request, h):
        """Gather a non-streamed answer (text, the done event, log-probability entries in order: the prompt's
        first when echoed); if the client hangs up meanwhile, cancel the generation."""
        parts, entries = [], {"echo": [], "gen": []}
        events = h.events()
        try:
            while True:
                nxt = asyncio.ensure_future(events.__anext__())
                while not nxt.done():
                    await asyncio.wait([nxt], timeout=DISCONNECT_POLL_S)
                    if not nxt.done() and await request.is_disconnected():
                        nxt.cancel()
                        h.cancel()
                        raise S.APIError(499, "client closed request")
                ev = nxt.result()
                if ev.logprobs:
                    entries["echo" if ev.kind == "echo" else "gen"] += ev.logprobs
                if ev.kind == "delta":
                    parts.append(ev.text)
                elif ev.kind == "done":
                    return "".join(parts), ev, entries
                elif ev.kind == "echo":
                    pass
                else:
                    raise S.APIError(500, f"generation failed: {ev.text}", type="server_error")
        finally:
            h.cancel()
            await events.aclose()

    async def _sse(self, hs, rid: str, model: str, chat: bool, include_usage: bool, echo_text=None, lps=None):
        """SSE chunks in OpenAI's shape (each choice's chunks carry its index). Starlette cancels this generator
        when the client disconnects; the `finally` flags the requests cancelled and the worker drops them
        before its next step."""
        def data(obj) -> str:
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        try:
            async for chunk in self._sse_events(hs, rid, model, chat, include_usage, data, echo_text, lps):
                yield chunk
        finally:  # client gone (generator cancelled/closed) or done: either way the worker may drop them
            for h in hs:
                h.cancel()

    @staticmethod
    async def _merged(hs):
        """(choice index, event) from every handle, as they come."""
        if len(hs) == 1:
            async for ev in hs[0].events():
                yield 0, ev
            return
        q: asyncio.Queue = asyncio.Queue()

        async def pump(i, h):
            try:
                async for ev in h.events():
                    await q.put((i, ev))
            finally:
                q.put_nowait((i, None))

        tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(hs)]
        try:
            left = len(hs)
            while left:
                i, ev = await q.get()
                if ev is None:
                    left -= 1
                else:
                    yield i, ev
        finally:
            for t in tasks:
                t.cancel()

    async def _sse_events(self, hs, rid, model, chat, include_usage, data, echo_text=None, lps=None):
        def chunk(i, text, finish, entries, echo=False):
            body = (S.chat_chunk(rid, model, {"content": text} if finish is None else {}, finish) if chat
                    else S.completion_body(rid, model, text, finish, None, chunk=True))
            body["choices"][0]["index"] = i
            if lps[i] is not None and (entries or echo):
                body["choices"][0]["logprobs"] = lps[i].part(entries or [], echo)
            return data(body)

        for i in range(len(hs)):
            if chat:
                b = S.chat_chunk(rid, model, {"role": "assistant", "content": ""}, None)
                b["choices"][0]["index"] = i
                yield data(b)
            elif echo_text and lps[i] is None:
                yield chunk(i, echo_text, None, None)
        prompt = cached = completion = 0
        async for i, ev in self._merged(hs):
            if ev.kind == "echo":                 # completions only: the prompt text with its log-probabilities
                yield chunk(i, echo_text or "", None, ev.logprobs, echo=True)
            elif ev.kind == "delta":
                yield chunk(i, ev.text, None, ev.logprobs)
            elif ev.kind == "done":
                yield chunk(i, "", ev.finish_reason, ev.logprobs)
                completion += ev.completion_tokens
                if i == 0:
                    prompt, cached = ev.prompt_tokens, ev.cached_tokens
            else:  # headers are already sent: report the failure in-band, as OpenAI does
                yield data(S.APIError(500, f"generation failed: {ev.text}", type="server_error").body())
                break
        else:
            if include_usage:
                u = S.usage(prompt, completion, cached)
                if chat:
                    yield data(S.chat_chunk(rid, model, None, None, u))
                else:
                    body = S.completion_body(rid, model, "", None, u, chunk=True)
                    body["choices"] = []
                    yield data(body)
        yield "data: [DONE]\n\n"


class _LogprobFormat:
    """Engine entries -> OpenAI logprobs objects: legacy completions (tokens, token_logprobs, top_logprobs,
    text_offset; an echoed prompt's first token has none) or chat ({"content": [...]})."""

    def __init__(self, engine, chat: bool, prompt_ids: list[int], echo_text: str | None):
        self.engine, self.tstr, self.chat = engine, engine.token_str, chat
        self.prompt_ids, self.echo_text = prompt_ids, echo_text
        self.offset = len(echo_text) if echo_text else 0      # where the generated text starts

    def _echo(self, entries) -> dict:
        """The prompt's entries (its first token has no log-probability); text_offset of each prompt token in the
        echoed text, from an incremental decode (BOS and a SentencePiece start-of-text space take no room)."""
        out = S.completion_logprobs([(self.prompt_ids[0], None, None)] + list(entries), self.tstr, 0)
        offsets = getattr(self.engine, "text_offsets", None)
        if offsets is not None:
            out["text_offset"] = [min(o, self.offset) for o in offsets(self.prompt_ids)]
        return out

    def whole(self, entries: dict) -> dict:
        if self.chat:
            return S.chat_logprobs(entries["gen"], self.tstr)
        gen = S.completion_logprobs(entries["gen"], self.tstr, self.offset)
        if self.echo_text is None:
            return gen
        head = self._echo(entries["echo"])
        return {k: head[k] + gen[k] for k in head}

    def part(self, entries: list, echo: bool = False) -> dict:
        if self.chat:
            return S.chat_logprobs(entries, self.tstr)
        if echo:
            return self._echo(entries)
        out = S.completion_logprobs(entries, self.tstr, self.offset)
        self.offset += sum(len(t) for t in out["tokens"])
        return out


def create_app(engine: Engine, *, api_key: str | None = None, max_queue: int = 64, max_active: int = 16,
               batching: bool = True, scheduler: Scheduler | None = None):
    """Build the ASGI app. The scheduler's worker thread starts with the app (lifespan) and stops with it."""
    sched = scheduler or Scheduler(engine, max_queue=max_queue, max_active=max_active, batching=batching)
    srv = Server(engine, sched)

    def wrap(fn):
        async def endpoint(request: Request):
            try:
                return await fn(request)
            except S.APIError as e:
                return _error(e)
        return endpoint

    async def not_found(request: Request, exc):
        status = getattr(exc, "status_code", 404)
        msg = "Method not allowed" if status == 405 else f"Unknown route {request.method} {request.url.path}"
        return _error(S.APIError(status, msg, code="not_found" if status == 404 else None))

    async def server_error(request: Request, exc):
        log.exception("unhandled error", exc_info=exc)
        return _error(S.APIError(500, f"internal error: {type(exc).__name__}", type="server_error"))

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        sched.start()
        try:
            yield
        finally:
            await asyncio.to_thread(sched.stop)

    routes = [
        Route("/health", wrap(srv.health), methods=["GET"]),
        Route("/v1/models", wrap(srv.models), methods=["GET"]),
        Route("/v1/completions", wrap(srv.completions), methods=["POST"]),
        Route("/v1/chat/completions", wrap(srv.chat), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: not_found, 405: not_found, 500: server_error})
    app.state.server = srv
    sched.start()  # also when mounted without lifespan events (e.g. behind another ASGI host)
    outer = BearerAuth(app, api_key)
    outer.state = app.state  # tests and embedders reach the Server (and its scheduler) here
    return outer
