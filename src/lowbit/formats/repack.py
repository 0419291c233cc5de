"""Row-interleaved packing (paper §2.2): R rows of the same K-block form one super-block: the R scales (and,
for codebook formats, the R codebook ids), then the R rows' code bytes in chunks of B bytes:
packed byte ((j // B) * R + r) * B + j % B  <-  byte j of row r.  q4_0 bytes are XORed with 0x88 (sign form).
N is padded up to a multiple of R with zero-scale rows, which the kernels compute but never store."""
import numpy as np

from . import get_format


def packed_nbytes(fmt_name: str, N: int, K: int, R: int) -> int:
    f = get_format(fmt_name)
    return (-(-N // R)) * (K // 32) * R * f.block_bytes


def interleave(blocks: np.ndarray, fmt_name: str, N: int, K: int, R: int, B: int) -> np.ndarray:
    """Plain blocks uint8 [N, K/32, block_bytes] (GGUF order) -> packed uint8 [ceil(N/R), K/32, R*block_bytes]."""
    f = get_format(fmt_name)
    nb = K // 32
    blocks = np.asarray(blocks, dtype=np.uint8).reshape(N, nb, f.block_bytes)
    Np = -(-N // R) * R
    if Np != N:
        blocks = np.concatenate([blocks, np.zeros((Np - N, nb, f.block_bytes), np.uint8)])
    G = Np // R
    b = blocks.reshape(G, R, nb, f.block_bytes).transpose(0, 2, 1, 3)        # [G, nb, R, bytes]
    hdr = b[..., : f.hdr_bytes]
    scales = hdr[..., :2].reshape(G, nb, 2 * R)
    parts = [scales]
    if f.hdr_bytes > 2:                                                       # codebook ids
        parts.append(hdr[..., 2:].reshape(G, nb, (f.hdr_bytes - 2) * R))
    codes = b[..., f.hdr_bytes:]                                              # [G, nb, R, row_bytes]
    codes = codes.reshape(G, nb, R, f.row_bytes // B, B).transpose(0, 1, 3, 2, 4).reshape(G, nb, R * f.row_bytes)
    if f.xor:
        codes = codes ^ np.uint8(f.xor)
    parts.append(codes)
    return np.ascontiguousarray(np.concatenate(parts, axis=-1))


def deinterleave(packed: np.ndarray, fmt_name: str, N: int, K: int, R: int, B: int) -> np.ndarray:
    """Inverse of interleave: packed -> plain blocks uint8 [N, K/32, block_bytes]."""
    f = get_format(fmt_name)
    nb = K // 32
    G = -(-N // R)
    p = np.asarray(packed, dtype=np.uint8).reshape(G, nb, R * f.block_bytes)
    scales = p[..., : 2 * R].reshape(G, nb, R, 2)
    off = 2 * R
    parts = [scales]
    if f.hdr_bytes > 2:
        n_id = (f.hdr_bytes - 2) * R
        parts.append(p[..., off: off + n_id].reshape(G, nb, R, f.hdr_bytes - 2))
        off += n_id
    codes = p[..., off:]
    if f.xor:
        codes = codes ^ np.uint8(f.xor)
    codes = codes.reshape(G, nb, f.row_bytes // B, R, B).transpose(0, 1, 3, 2, 4).reshape(G, nb, R, f.row_bytes)
    parts.append(codes)
    blocks = np.concatenate(parts, axis=-1).transpose(0, 2, 1, 3).reshape(G * R, nb, f.block_bytes)
    return np.ascontiguousarray(blocks[:N])
