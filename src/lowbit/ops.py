"""The only Python file that imports the C core: kernel choice, weight packing and the linear op."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import _core
from .formats import check_float_matrix, get_format
from .formats.repack import interleave

KERNELS = _core.kernels()           # the list in csrc/kernels.inc, with usability on this CPU
_BY_NAME = {k["name"]: k for k in KERNELS}


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share one core's int8 units)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        cpus = set(range(os.cpu_count() or 1))
    cores = set()
    for c in cpus:
        base = f"/sys/devices/system/cpu/cpu{c}/topology/"
        try:
            with open(base + "core_id") as f1, open(base + "physical_package_id") as f2:
                cores.add((f1.read().strip(), f2.read().strip()))
        except OSError:
            cores.add(("cpu", c))
    return max(1, len(cores))


def _default_threads() -> int:
    env = os.environ.get("LOWBIT_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"LOWBIT_NUM_THREADS={env!r} is not an integer") from None
        if n < 1:
            raise ValueError(f"LOWBIT_NUM_THREADS={env!r} must be >= 1")
        return n
    return physical_cores()


def set_num_threads(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"thread count must be a positive integer, got {n!r}")
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    return _core.get_num_threads()


set_num_threads(_default_threads())


def kernel_for(fmt: str) -> dict:
    """The kernel chosen at import for a weight format (first usable line of kernels.inc)."""
    get_format(fmt)
    idx = _core.selected(fmt)
    if idx is None:
        raise ValueError(f"no kernel for format {fmt!r} on this CPU")
    return KERNELS[idx]


def kernel_named(name: str) -> dict:
    try:
        k = _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown kernel {name!r}") from None
    if not k["runnable"]:
        raise ValueError(f"kernel {name} needs {'+'.join(k['isa'])}, which this CPU lacks")
    return k


@dataclass
class PackedWeight:
    """An [N, K] weight matrix in a kernel's interleaved layout."""
    fmt: str
    N: int
    K: int
    kernel: dict
    data: np.ndarray                      # uint8, ceil(N/R) * K/32 super-blocks
    aux: Optional[np.ndarray] = None      # int8 codebook tables for cb formats
    meta: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + (0 if self.aux is None else self.aux.nbytes))

    @classmethod
    def from_blocks(cls, blocks: np.ndarray, fmt: str, N: int, K: int, kernel: Optional[str] = None,
                    aux: Optional[np.ndarray] = None) -> "PackedWeight":
        """Plain GGUF-order blocks (uint8 [N, K/32 * block_bytes]) -> packed for the chosen kernel."""
        f = get_format(fmt)
        _check_nk(N, K)
        blocks = np.asarray(blocks)
        if blocks.dtype != np.uint8 or blocks.size != N * (K // 32) * f.block_bytes:
            raise ValueError(f"{fmt} blocks for [{N}, {K}] must be {N * (K // 32) * f.block_bytes} uint8 bytes, "
                             f"got {blocks.size} of {blocks.dtype}")
        k = kernel_named(kernel) if kernel else kernel_for(fmt)
        if k["format"] != fmt:
            raise ValueError(f"kernel {k['name']} computes {k['format']}, not {fmt}")
        if fmt in ("cb4", "cb2"):     # tables validated against the ids: kernels index them unchecked
            from .formats.cb import prepare_aux
            aux = prepare_aux(blocks, aux, fmt)
        data = interleave(blocks, fmt, N, K, k["R"], k["B"])
        return cls(fmt, N, K, k, data.reshape(-1), aux)


def _check_nk(N: int, K: int) -> None:
    if N < 1:
        raise ValueError(f"weight must have at least one output row, got N={N}")
    if K < 32 or K % 32:
        raise ValueError(f"K={K} must be a positive multiple of 32 for block formats (use a float fallback)")


def pack_weight(w: np.ndarray, fmt: str = "q4_0", kernel: Optional[str] = None) -> PackedWeight:
    """Quantize a float [N, K] matrix with the numpy reference quantizer and pack it for the kernel."""
    w = check_float_matrix(w)
    N, K = w.shape
    f = get_format(fmt)
    if f.quantize is None:
        raise ValueError(f"format {fmt} has no direct quantizer; use its learning tool")
    blocks = f.quantize(np.ascontiguousarray(w, dtype=np.float32).reshape(-1, 32))
    return PackedWeight.from_blocks(blocks.reshape(N, -1), fmt, N, K, kernel)


def _check_packed(w: PackedWeight) -> None:
    """A hand-built or edited PackedWeight must still match its kernel: the C side trusts the layout."""
    k = w.kernel
    if k["format"] != w.fmt:
        raise ValueError(f"PackedWeight is {w.fmt} but carries kernel {k['name']} for {k['format']}")
    need = -(-w.N // k["R"]) * (w.K // 32) * k["sb_bytes"]
    if not isinstance(w.data, np.ndarray) or w.data.dtype != np.uint8 or w.data.nbytes != need:
        raise ValueError(f"PackedWeight data must be {need} uint8 bytes for {k['name']} [{w.N}, {w.K}], got "
                         f"{getattr(w.data, 'nbytes', '?')} bytes of {getattr(w.data, 'dtype', type(w.data))}")


def _check_x(x: np.ndarray, K: int) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"activations must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"activations must be float32, got {x.dtype}")
    if x.ndim not in (1, 2):
        raise ValueError(f"activations must be 1-D [K] or 2-D [M, K], got shape {x.shape}")
    if x.shape[-1] != K:
        raise ValueError(f"activations have K={x.shape[-1]}, the weight expects K={K}")
    if not x.flags.c_contiguous:
        raise ValueError("activations must be C-contiguous (use np.ascontiguousarray)")
    return x


def linear(x: np.ndarray, w: PackedWeight, out: Optional[np.ndarray] = None) -> np.ndarray:
    """y[M, N] = x[M, K] @ W[N, K]^T with float32 in and out; activations are quantized to Q8_0 per call."""
    if not isinstance(w, PackedWeight):
        raise TypeError(f"weight must be a PackedWeight, got {type(w).__name__}")
    _check_packed(w)
    x = _check_x(x, w.K)
    M = 1 if x.ndim == 1 else x.shape[0]
    shape = (w.N,) if x.ndim == 1 else (M, w.N)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    if M:
        _core.linear(w.kernel["index"], w.K, w.N, w.data, w.aux, x, M, out)
    return out


MAX_PARTS = 8    # LB_MAX_PARTS in csrc/ops/ops.h


def parts_compatible(kernels) -> bool:
    """Whether weights packed for these kernels can run as one linear_parts call: their activations must pack
    alike (the check lb_parts_compatible in csrc/ops/linear.c makes again)."""
    return len({(k["act_B"], "avx2" in k["isa"]) for k in kernels}) == 1


def linear_parts(x: np.ndarray, ws, out: Optional[np.ndarray] = None) -> np.ndarray:
    """y = x @ [W_0; W_1; ...]^T for weights sharing K, their outputs side by side ([M, sum N_i]) as if they were
    one fused matrix: one activation quantization, one threaded dispatch (fused q/k/v or gate/up whose cb
    tables cannot share one tensor). Every column is bit-identical to linear(x, W_i)."""
    ws = list(ws)
    if not ws or len(ws) > MAX_PARTS:
        raise ValueError(f"linear_parts takes 1 to {MAX_PARTS} weights, got {len(ws)}")
    for w in ws:
        if not isinstance(w, PackedWeight):
            raise TypeError(f"weights must be PackedWeights, got {type(w).__name__}")
        _check_packed(w)
        if w.K != ws[0].K:
            raise ValueError(f"weights have K={ws[0].K} and K={w.K}; parts of one output share K")
    if not parts_compatible([w.kernel for w in ws]):
        raise ValueError("these kernels pack activations differently; call linear on each")
    x = _check_x(x, ws[0].K)
    M = 1 if x.ndim == 1 else x.shape[0]
    Nt = sum(w.N for w in ws)
    shape = (Nt,) if x.ndim == 1 else (M, Nt)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    cols = np.cumsum([0] + [w.N for w in ws])
    parts = tuple((w.kernel["index"], w.N, w.data, w.aux, int(c)) for w, c in zip(ws, cols))
    if M:
        _core.linear_parts(parts, ws[0].K, x, M, out, Nt)
    return out


def runtime_info() -> dict:
    """CPU features, the kernel chosen per format and the thread count (what `lowbit info` prints)."""
    from .formats import FORMATS
    feats = _core.features()
    chosen = {}
    for fmt in FORMATS:
        try:
            chosen[fmt] = kernel_for(fmt)["name"]
        except ValueError:
            chosen[fmt] = None
    return {"arch": feats["arch"], "features": feats["found"], "usable": feats["usable"],
            "sve_bits": feats["sve_bits"], "disabled": os.environ.get("LOWBIT_DISABLE_ISA", ""),
            "kernels": chosen, "threads": get_num_threads(), "physical_cores": physical_cores()}
