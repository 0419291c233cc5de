"""OpenAI-compatible HTTP server: `lowbit serve` (see docs/server.md)."""
from .app import create_app
from .engine import Engine, SamplingParams
from .scheduler import QueueFull, Scheduler

__all__ = ["create_app", "Engine", "SamplingParams", "Scheduler", "QueueFull"]
