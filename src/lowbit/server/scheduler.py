"""One engine worker thread serving many requests: a fair FIFO admission queue, then continuous batching.

The model's weights are one shared state and the C kernels already use every core, so one worker thread runs
the model. Requests wait in FIFO order for one of `max_active` slots (beyond `max_queue` waiting, submit()
refuses and the app answers 503). Each round the worker prefills the newly admitted sequences, then advances
every other active sequence by one token in a single batched decode step (engine.step_batch: M rows through the
GEMM kernels). Engines without step_batch get token-level round-robin over their generate() iterators, so all
streams still progress. Results go back to the asyncio loop with call_soon_threadsafe; a cancelled request
(client gone) leaves the batch before the next step.
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
    cached_tokens: int = 0    # prompt tokens the engine's prompt cache supplied
    logprobs: list | None = None   # "delta"/"done": entries of the tokens since the last event; "echo": the prompt's


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
                if ev.kind in ("done", "error"):
                    return
        finally:
            self.cancel()


class _Seq:
    """Scheduler-side state of one admitted request: the engine's generator (round-robin mode) or its
    sequence state (batched mode), the stop matcher and the token count."""

    def __init__(self, h: Handle):
        self.h = h
        self.stop = StopMatcher(h.params.stop)
        self.n = 0
        self.gen = None
        self.state = None
        self.done = False
        self.outcome = None  # "finished" | "failed" | "cancelled"
        self.ended = None
        self.lps = [] if h.params.logprobs is not None else None   # (text start, entry) not yet posted
        self.chars = self.posted = 0     # text of the generated tokens so far / posted in deltas

    def emit(self, tok: int | None, text: str, lp=None) -> None:
        if tok is not None:
            self.n += 1
            if self.lps is not None and lp is not None:
                self.lps.append((self.chars, lp))
        self.chars += len(text)
        out, stopped = self.stop.feed(text)
        if out:
            self.posted += len(out)
            self.h._post(Event("delta", out, logprobs=self._take_lps()))
        if stopped:
            self.finish("stop")
        elif self.n >= self.h.params.max_tokens:
            self.finish("length")

    def _take_lps(self, cut: bool = False):
        """Entries to post; cut (a stop string ended the text): only tokens that start inside the posted text."""
        if self.lps is None:
            return None
        out, self.lps = self.lps, []
        return [e for start, e in out if not cut or start < self.posted]

    def finish(self, reason: str) -> None:
        if reason == "stop" and self.lps:
            self.lps = [(0, e) for e in self._take_lps(cut=True)]
        tail = self.stop.flush() if reason != "stop" else ""
        if tail:
            self.h._post(Event("delta", tail, logprobs=self._take_lps()))
        self.h._post(Event("done", finish_reason=reason, prompt_tokens=len(self.h.prompt_ids),
                           completion_tokens=self.n, cached_tokens=getattr(self.state, "reused", 0),
                           logprobs=self._take_lps()))
        self.close("finished")

    def fail(self, msg: str) -> None:
        self.h._post(Event("error", text=msg))
        self.close("failed")

    def close(self, outcome: str = "cancelled") -> None:
        self.done, self.outcome = True, outcome
        if self.gen is not None:
            self.gen.close()
        self.ended, self.gen, self.state = self.state, None, None    # ended: for the engine's release()


class Scheduler:
    def __init__(self, engine: Engine, max_queue: int = 64, max_active: int = 16, batching: bool = True):
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
        # continuous batching when the engine can step many sequences at once, else token round-robin
        self.batched = batching and all(hasattr(engine, a) for a in ("start", "step_batch", "text", "is_eos",
                                                                     "flush"))

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

    def _admit(self) -> list[_Seq]:
        """Move waiting requests into free slots, oldest first; return the newly admitted."""
        new = []
        with self._cv:
            while not self._active and not self._pending and not self._stopping:
                self._cv.wait(1.0)
            while self._pending and len(self._active) < self.max_active:
                h = self._pending.popleft()
                if h.cancelled.is_set():
                    self.stats["cancelled"] += 1
                    continue
                s = _Seq(h)
                self._active.append(s)
                new.append(s)
        return new

    def _run(self) -> None:
        batched = self.batched
        while True:
            new = self._admit()
            if self._stopping:
                break
            for s in self._active:
                if s.h.cancelled.is_set() and not s.done:
                    s.close()
                    self.stats["cancelled"] += 1
            try:
                if batched:
                    self._round_batched(new)
                else:
                    self._round_robin(new)
            except Exception as e:  # a bug on our side: fail this round's requests, keep the worker alive
                log.exception("scheduler round failed")
                for s in self._active:
                    if not s.done:
                        s.fail(f"internal error: {type(e).__name__}: {e}")
                        self.stats["errors"] += 1
            self.stats["served"] += sum(s.outcome == "finished" for s in self._active)
            self._release([s for s in self._active if s.done])
            self._active = [s for s in self._active if not s.done]
        for s in self._active:
            s.fail("server is shutting down")
        with self._cv:
            for h in self._pending:
                h._post(Event("error", text="server is shutting down"))
            self._pending.clear()
        self._active = []

    def _release(self, ended: list[_Seq]) -> None:
        """Hand finished sequences' states back to the engine (its prompt cache), when it takes them."""
        release = getattr(self.engine, "release", None)
        for s in ended:
            state, s.ended = s.ended, None
            if release is not None and state is not None:
                try:
                    release(state)
                except Exception:       # losing a cache entry must not take the worker down
                    log.exception("engine release failed")

    def _guard(self, seqs: list[_Seq], fn, *args):
        """Run an engine call; on failure fail those sequences (a bad request must not take the worker down)."""
        try:
            return fn(*args)
        except Exception as e:
            log.exception("engine call %s failed", getattr(fn, "__name__", fn))
            for s in seqs:
                s.fail(f"{type(e).__name__}: {e}")
            self.stats["errors"] += len(seqs)
            return None

    def _round_robin(self, new: list[_Seq]) -> None:
        """One token for every active sequence, in admission order."""
        for s in new:
            s.gen = self._guard([s], self.engine.generate, s.h.prompt_ids, s.h.params)
        for s in self._active:
            if s.done:
                continue
            try:
                tok, text = next(s.gen)
            except StopIteration:
                s.finish("stop")
                continue
            except Exception as e:
                log.exception("generation failed for request %d", s.h.id)
                s.fail(f"{type(e).__name__}: {e}")
                self.stats["errors"] += 1
                continue
            s.emit(tok, text)

    def _round_batched(self, new: list[_Seq]) -> None:
        """Prefill the newcomers (first token each), then one decode step for all others as one batch."""
        eng = self.engine
        for s in new:
            r = self._guard([s], eng.start, s.h.prompt_ids, s.h.params)
            if r is not None:
                s.state = r[0]
                if getattr(s.state, "prompt_lps", None) is not None:
                    s.h._post(Event("echo", logprobs=s.state.prompt_lps))
                if s.h.params.max_tokens == 0:        # echo only: the prompt scored, nothing generated
                    s.finish("length")
                else:
                    self._emit_token(s, r[1])
        batch = [s for s in self._active if not s.done and s not in new]
        if batch:
            toks = self._guard(batch, eng.step_batch, [s.state for s in batch])
            for s, tok in zip(batch, toks or ()):
                self._emit_token(s, tok)

    def _emit_token(self, s: _Seq, tok: int) -> None:
        eng = self.engine
        if eng.is_eos(tok):
            tail = eng.flush(s.state)
            if tail:
                s.emit(None, tail)
            if not s.done:
                s.finish("stop")
        else:
            s.emit(tok, eng.text(s.state, tok), getattr(s.state, "last_lp", None))
