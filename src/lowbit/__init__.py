"""lowbit: fast low-bit LLM inference on CPUs."""
from .ops import PackedWeight, linear, linear_parts, pack_weight, runtime_info, set_num_threads, get_num_threads

from .api import LLM, describe_model, generate, load, stream_generate

__version__ = "0.1.0"
__all__ = ["PackedWeight", "linear", "linear_parts", "pack_weight", "runtime_info", "set_num_threads",
           "get_num_threads", "LLM", "load", "generate", "stream_generate", "describe_model"]
