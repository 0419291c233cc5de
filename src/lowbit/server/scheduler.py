"""One engine worker thread serving many requests: a fair FIFO admission queue plus token-level round-robin.

The model's weights are one shared state and the C kernels already use every core, so a single worker thread
advances all active sequences one token each per round (each sequence owns its KV cache inside its generator).
Requests wait in FIFO order for one of `max_active` slots; beyond `max_queue` waiting requests, submit() refuses
(the app answers 503). Results go back to the asyncio loop with call_soon_threadsafe; a cancelled request (client
gone) is dropped before its next token.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
from dataclasses import dataclass

from .engine import Engine, SamplingParams

log = logging.getLogger("lowbit.server")


class QueueFull(Exception):
    """More requests are waiting than --max-queue allows."""


@dataclass
class Event:
    kind: str  # "delta" (text, one token), "done" (finish_reason), "error" (message)
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class StopMatcher:
    """Hold back text that may be the start of a stop string, cut at the first full match (OpenAI semantics:
    the stop string itself is not returned)."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit, stopped)."""
        if not self.stops:
            return text, False
        buf = self.pending + text
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.pending = ""
            return buf[:cut], True
        # keep the longest suffix of buf that is a proper prefix of some stop string
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), keep, -1):
                if buf.endswith(s[:k]):
                    keep = k
                    break
        self.pending = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class Handle:
    """The asyncio side of one request: an event queue and a cancel flag."""

    _ids = itertools.count(1)

    def __init__(self, prompt_ids: list[int], params: SamplingParams, loop: asyncio.AbstractEventLoop):
        self.id = next(self._ids)
        self.prompt_ids = prompt_ids
        self.params = params
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def _post(self, ev: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, ev)
        except RuntimeError:  # loop closed: the server is shutting down, nobody is listening
            self.cancelled.set()

    async def events(self):
        """Yield events until done/error; cancel the generation if the consumer goes away."""
        try:
            while True:
                ev = await self.queue.get()
                yield ev
                if ev.kind != "delta":
                    return
        finally:
            self.cancel()


class _Seq:
    def __init__(self, h: Handle, engine: Engine):
        self.h = h
        self.gen = engine.generate(h.prompt_ids, h.params)
        self.stop = StopMatcher(h.params.stop)
        self.n = 0

    def finish(self, reason: str) -> None:
        tail = self.stop.flush() if reason != "stop" else ""
        if tail:
            self.h._post(Event("delta", tail))
        self.h._post(Event("done", finish_reason=reason, prompt_tokens=len(self.h.prompt_ids),
                           completion_tokens=self.n))
        self.gen.close()


class Scheduler:
    def __init__(self, engine: Engine, max_queue: int = 64, max_active: int = 16):
        if max_queue < 0 or max_active < 1:
            raise ValueError(f"max_queue must be >= 0 and max_active >= 1 (got {max_queue}, {max_active})")
        self.engine = engine
        self.max_queue = max_queue
        self.max_active = max_active
        self._pending: collections.deque[Handle] = collections.deque()
        self._active: list[_Seq] = []
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.stats = {"served": 0, "cancelled": 0, "errors": 0}

    # -- asyncio side -------------------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams) -> Handle:
        h = Handle(prompt_ids, params, asyncio.get_running_loop())
        with self._cv:
            if self._stopping:
                raise QueueFull("server is shutting down")
            # capacity = the active slots plus the waiting room
            if len(self._pending) + len(self._active) >= self.max_active + self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests already waiting (--max-queue {self.max_queue})")
            self._pending.append(h)
            self._cv.notify()
        return h

    @property
    def load(self) -> dict:
        with self._cv:
            return {"active": len(self._active), "waiting": len(self._pending)}

    # -- worker thread --------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lowbit-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _admit(self) -> None:
        with self._cv:
            while not self._active and not self._pending and not self._stopping:
                self._cv.wait(1.0)
            while self._pending and len(self._active) < self.max_active:
                h = self._pending.popleft()
                if h.cancelled.is_set():
                    self.stats["cancelled"] += 1
                    continue
                try:
                    self._active.append(_Seq(h, self.engine))
                except Exception as e:  # a bad request must not take the worker down
                    log.exception("engine rejected request %d", h.id)
                    h._post(Event("error", text=f"{type(e).__name__}: {e}"))

    def _run(self) -> None:
        while True:
            self._admit()
            if self._stopping:
                break
            for s in list(self._active):
                self._step(s)
            self._active = [s for s in self._active if s.gen is not None]
        for s in self._active:
            s.gen.close()
            s.h._post(Event("error", text="server is shutting down"))
        with self._cv:
            for h in self._pending:
                h._post(Event("error", text="server is shutting down"))
            self._pending.clear()
        self._active = []

    def _step(self, s: _Seq) -> None:
        h = s.h
        if h.cancelled.is_set():
            s.gen.close()
            s.gen = None
            self.stats["cancelled"] += 1
            return
        try:
            tok, text = next(s.gen)
        except StopIteration:
            s.finish("stop")
            s.gen = None
            self.stats["served"] += 1
            return
        except Exception as e:
            log.exception("generation failed for request %d", h.id)
            h._post(Event("error", text=f"{type(e).__name__}: {e}"))
            s.gen.close()
            s.gen = None
            self.stats["errors"] += 1
            return
        s.n += 1
        out, stopped = s.stop.feed(text)
        if out:
            h._post(Event("delta", out))
        if stopped or s.n >= h.params.max_tokens:
            s.finish("stop" if stopped else "length")
            s.gen = None
            self.stats["served"] += 1
