"""One registry of weight formats. The numpy code here is the ground truth for every byte layout."""
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import cb, iq4_nl, q4_0, q8_0

QK = 32


@dataclass(frozen=True)
class Format:
    name: str
    block_bytes: int        # bytes of one plain (GGUF-style) block of 32 weights
    row_bytes: int          # bytes of codes per block (what gets interleaved)
    hdr_bytes: int          # bytes before the codes: the 16-bit scale (cb: the word also holds the id); 2 for all
    xor: int                # value XORed into every packed code byte (q4_0: 0x88, sign form)
    quantize: Optional[Callable[[np.ndarray], np.ndarray]]   # float [n, 32] -> uint8 [n, block_bytes]
    dequantize: Callable[..., np.ndarray]                     # uint8 [n, block_bytes] -> float32 [n, 32]

    @property
    def bpw(self) -> float:
        return self.block_bytes * 8 / QK


FORMATS = {
    "q4_0": Format("q4_0", 18, 16, 2, 0x88, q4_0.quantize_blocks, q4_0.dequantize_blocks),
    "iq4_nl": Format("iq4_nl", 18, 16, 2, 0, iq4_nl.quantize_blocks, iq4_nl.dequantize_blocks),
    "q8_0": Format("q8_0", 34, 32, 2, 0, q8_0.quantize_blocks, q8_0.dequantize_blocks),
    # codebook formats: tables are learned per tensor (lowbit.quantize); dequantize(blocks, tables)
    "cb4": Format("cb4", 18, 16, 2, 0, None, lambda b, t=None: cb.dequantize_blocks(b, t, "cb4")),
    "cb2": Format("cb2", 10, 8, 2, 0, None, lambda b, t=None: cb.dequantize_blocks(b, t, "cb2")),
}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown weight format {name!r}; known: {', '.join(sorted(FORMATS))}") from None


def register(fmt: Format) -> None:
    FORMATS[fmt.name] = fmt


def check_float_matrix(w) -> np.ndarray:
    """A float [N, K] weight with K a positive multiple of 32 (what every block format needs), else a clear error."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D [N, K], got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise TypeError(f"weight must be floating point, got {w.dtype}")
    N, K = w.shape
    if N < 1:
        raise ValueError(f"weight must have at least one output row, got N={N}")
    if K < 32 or K % 32:
        raise ValueError(f"K={K} must be a positive multiple of 32 for block formats (use a float fallback)")
    return w
