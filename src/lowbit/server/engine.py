"""What the server needs from a model: tokenize, render a chat, and a per-request token generator.

The scheduler only talks to this interface, so tests can drive it with a tiny fake and the real runtime is one
adapter (LowbitEngine) over lowbit's public API.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None    # None: off; N >= 0: each token's log-probability and the N most likely
    echo: bool = False             # with logprobs: the prompt tokens' log-probabilities too


class Engine(Protocol):
    model_id: str
    n_ctx: int

    def encode(self, text: str) -> list[int]:
        """Prompt text -> token ids (with BOS if the model wants one)."""

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """OpenAI-style [{"role", "content"}] -> prompt token ids, with the assistant turn opened."""

    def generate(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[tuple[int, str]]:
        """Yield (token_id, text_delta) per generated token; return at end-of-sequence.

        The scheduler stops the iterator (close()) at max_tokens, a stop string or a cancel, so an implementation
        may run until the context is full. Each call owns its state (KV cache, RNG): several may be live at once,
        advanced alternately from one thread."""


class BatchEngine(Engine, Protocol):
    """Optional: engines that can decode many sequences in one step (continuous batching)."""

    def start(self, prompt_ids: list[int], params: SamplingParams) -> tuple[object, int]:
        """Prefill into a new per-sequence state; return (state, first sampled token)."""

    def step_batch(self, states: list) -> list[int]:
        """Run each state's last token through the model together; one new sampled token per state."""

    def text(self, state, tok: int) -> str:
        """Text delta for a sampled token (may be empty while a UTF-8 character is incomplete)."""

    def is_eos(self, tok: int) -> bool: ...

    def flush(self, state) -> str:
        """Text still held by the detokenizer at end of sequence."""
