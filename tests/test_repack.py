"""Row interleaving (formats/repack.py) round-trips and matches the spec's byte formula (paper-spec §2.2);
numpy activation packing matches the C packer byte for byte (§2.4)."""
import numpy as np
import pytest

from lowbit import _core
from lowbit.formats import FORMATS, get_format
from lowbit.formats import activations
from lowbit.formats.repack import deinterleave, interleave, packed_nbytes
from lowbit.ops import KERNELS


def layouts():
    """(format, R, B) for every layout in the kernel list, for formats the numpy registry knows."""
    seen = sorted({(k["format"], k["R"], k["B"]) for k in KERNELS})
    return [pytest.param(*l, id=f"{l[0]}-{l[1]}x{l[2]}",
                         marks=[] if l[0] in FORMATS else [pytest.mark.skip(reason=f"{l[0]} not in formats")])
            for l in seen]


def random_blocks(fmt, N, K, seed):
    f = get_format(fmt)
    return np.random.default_rng(seed).integers(0, 256, (N, K // 32, f.block_bytes)).astype(np.uint8)


@pytest.mark.parametrize("fmt,R,B", layouts())
def test_round_trip(fmt, R, B):
    for N, K in ((R + 3, 96), (2 * R - 1, 64), (1, 32), (3 * R, 128)):
        blocks = random_blocks(fmt, N, K, N * K)
        packed = interleave(blocks, fmt, N, K, R, B)
        assert packed.nbytes == packed_nbytes(fmt, N, K, R)
        np.testing.assert_array_equal(deinterleave(packed, fmt, N, K, R, B), blocks, err_msg=f"N={N} K={K}")


# Hand-computed: (format, R, B) -> (row r, code byte j, packed offset inside the super-block).
# offset = header (R scale words; cb ids live inside them) + ((j // B) * R + r) * B + j % B, worked out by hand.
HAND = {
    ("q4_0", 8, 8): (3, 13, 16 + 11 * 8 + 5),     # = 109
    ("q4_0", 4, 8): (2, 13, 8 + 6 * 8 + 5),       # = 61
    ("q4_0", 4, 4): (1, 6, 8 + 5 * 4 + 2),        # = 30
    ("iq4_nl", 8, 8): (7, 2, 16 + 7 * 8 + 2),     # = 74
    ("iq4_nl", 4, 8): (0, 9, 8 + 4 * 8 + 1),      # = 41
    ("iq4_nl", 4, 4): (3, 15, 8 + 15 * 4 + 3),    # = 71
    ("q8_0", 8, 8): (5, 29, 16 + 29 * 8 + 5),     # = 253
    ("q8_0", 4, 8): (3, 17, 8 + 11 * 8 + 1),      # = 97
    ("q8_0", 4, 4): (1, 22, 8 + 21 * 4 + 2),      # = 94
    ("cb4", 8, 8): (3, 13, 16 + 11 * 8 + 5),      # = 109
    ("cb4", 4, 8): (2, 13, 8 + 6 * 8 + 5),        # = 61
    ("cb4", 4, 4): (1, 6, 8 + 5 * 4 + 2),         # = 30
    ("cb4", 8, 16): (5, 9, 16 + 5 * 16 + 9),      # = 105
    ("cb2", 8, 8): (6, 5, 16 + 6 * 8 + 5),        # = 69
    ("cb2", 4, 8): (2, 5, 8 + 2 * 8 + 5),         # = 29
    ("cb2", 4, 4): (2, 5, 8 + 6 * 4 + 1),         # = 33
}


@pytest.mark.parametrize("fmt,R,B", layouts())
def test_layout_pinned(fmt, R, B):
    if (fmt, R, B) not in HAND:
        pytest.fail(f"add a hand-computed byte position for the new layout {fmt} {R}x{B} to HAND")
    f = get_format(fmt)
    r, j, off = HAND[(fmt, R, B)]
    hdr = f.hdr_bytes * R
    assert off == hdr + ((j // B) * R + r) * B + j % B          # the table agrees with the spec formula
    N, K = 2 * R, 64
    blocks = random_blocks(fmt, N, K, 9)
    packed = interleave(blocks, fmt, N, K, R, B).reshape(2, K // 32, R * f.block_bytes)
    xor = 0x88 if fmt == "q4_0" else 0
    for g in range(2):
        for b in range(K // 32):
            src = blocks[g * R + r, b]
            assert packed[g, b, off] == src[f.hdr_bytes + j] ^ xor
            assert packed[g, b, 2 * r: 2 * r + 2].tobytes() == src[:2].tobytes()      # scale word, never XORed
    # every code byte by the formula, not just one
    codes = packed[..., hdr:]
    for rr in range(R):
        for jj in range(f.row_bytes):
            np.testing.assert_array_equal(codes[:, :, ((jj // B) * R + rr) * B + jj % B],
                                          blocks.reshape(2, R, K // 32, -1)[:, rr, :, f.hdr_bytes + jj] ^ xor)


def test_xor_only_for_q4_0():
    for fmt, f in FORMATS.items():
        assert f.xor == (0x88 if fmt == "q4_0" else 0), fmt


def act_inputs(M, K, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((M, K)) * rng.uniform(0.01, 10, (M, 1))).astype(np.float32)
    x[0, :32] = 0                                                        # an all-zero block
    if K >= 64:                                                          # exact .5 ties (amax 127 -> d = 1)
        x[-1, 32:64] = np.arange(32) - 15.5
        x[-1, 32] = 127
        x[-1, 33] = np.nextafter(np.float32(0.5), np.float32(0))
    return x


@pytest.mark.parametrize("act_B", [4, 8])
@pytest.mark.parametrize("M", range(1, 10))
def test_activation_pack_matches_c(M, act_B):
    ks = [k for k in KERNELS if k["act_B"] == act_B and k["runnable"]]
    if not ks:
        pytest.skip(f"no runnable kernel with act_B={act_B}")
    K = 96
    x = act_inputs(M, K, M * 10 + act_B)
    ref = activations.pack(x, act_B)
    out = np.full(_core.act_bytes(M, K), 0xEE, np.uint8)
    _core.pack_activations(ks[0]["index"], x, M, K, out)
    assert len(ref) <= out.size
    nb = K // 32
    head = (M // 4) * nb * 136 + (M % 4) * nb * 34
    care = np.ones(len(ref), bool)
    care[head:len(ref) - M * nb * 2] = False          # alignment padding before the block sums: never read
    got = out[:len(ref)]
    bad = np.nonzero((got != np.frombuffer(ref, np.uint8)) & care)[0]
    assert bad.size == 0, f"C and numpy activation packing differ at bytes {bad[:8]} (head {head}, total {len(ref)})"
