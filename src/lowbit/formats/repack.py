"""Row-interleaved packing (paper §2.2): R rows of the same K-block form one super-block: the R 16-bit scale
words (codebook formats keep the id in their low 4 bits), then the R rows' code bytes in chunks of B bytes:
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
    scales = b[..., :2].reshape(G, nb, 2 * R)
    codes = b[..., 2:]                                                        # [G, nb, R, row_bytes]
    codes = codes.reshape(G, nb, R, f.row_bytes // B, B).transpose(0, 1, 3, 2, 4).reshape(G, nb, R * f.row_bytes)
    if f.xor:
        codes = codes ^ np.uint8(f.xor)
    return np.ascontiguousarray(np.concatenate([scales, codes], axis=-1))


def deinterleave(packed: np.ndarray, fmt_name: str, N: int, K: int, R: int, B: int) -> np.ndarray:
    """Inverse of interleave: packed -> plain blocks uint8 [N, K/32, block_bytes]."""
    f = get_format(fmt_name)
    nb = K // 32
    G = -(-N // R)
    p = np.asarray(packed, dtype=np.uint8).reshape(G, nb, R * f.block_bytes)
    scales = p[..., : 2 * R].reshape(G, nb, R, 2)
    codes = p[..., 2 * R:]
    if f.xor:
        codes = codes ^ np.uint8(f.xor)
    codes = codes.reshape(G, nb, f.row_bytes // B, R, B).transpose(0, 1, 3, 2, 4).reshape(G, nb, R, f.row_bytes)
    blocks = np.concatenate([scales, codes], axis=-1).transpose(0, 2, 1, 3).reshape(G * R, nb, f.block_bytes)
    return np.ascontiguousarray(blocks[:N])
