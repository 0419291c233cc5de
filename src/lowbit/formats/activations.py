"""Reference activation packing (must match csrc/ref/quant_act.c byte for byte): Q8_0 rows for GEMV, and
groups of 4 rows as Q8_0x4 (4 fp16 scales, then 128 bytes where element e of row i sits at
((e // B) * 4 + i) * B + e % B) for GEMM; the M % 4 leftover rows stay plain. Then int16 block sums."""
import numpy as np

from .q8_0 import quantize_parts


def pack(x: np.ndarray, act_B: int) -> bytes:
    x = np.asarray(x, dtype=np.float32)
    M, K = x.shape
    nb = K // 32
    d, q = quantize_parts(x.reshape(-1, 32))
    d = d.reshape(M, nb)
    q = q.reshape(M, nb, 32)
    G, rest = M // 4, M % 4
    out = []
    if G:
        dg = d[: 4 * G].reshape(G, 4, nb).transpose(0, 2, 1)                      # [G, nb, 4]
        qg = q[: 4 * G].reshape(G, 4, nb, 32 // act_B, act_B).transpose(0, 2, 3, 1, 4).reshape(G, nb, 128)
        out.append(np.concatenate([dg.copy().view(np.uint8).reshape(G, nb, 8), qg.view(np.uint8)], -1).tobytes())
    if rest:
        dr = d[4 * G:].copy().view(np.uint8).reshape(rest, nb, 2)
        out.append(np.concatenate([dr, q[4 * G:].view(np.uint8)], -1).tobytes())
    sums = q.astype(np.int32).sum(-1).astype(np.int16)                            # [M, nb]
    bs = []
    if G:
        bs.append(sums[: 4 * G].reshape(G, 4, nb).transpose(0, 2, 1).tobytes())
    if rest:
        bs.append(sums[4 * G:].tobytes())
    head = b"".join(out)
    pad = (-len(head)) % 16
    return head + b"\0" * pad + b"".join(bs)
