"""A few seconds of fuzzing per loader in CI (hypothesis mutations of small valid files; the long local runs use
atheris: fuzz/run_atheris.py). Every input must load or raise ModelFileError: any other exception fails."""
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
import targets  # noqa: E402

SEEDS = {}
HOSTILE_INTS = [0, 1, 2, 3, 31, 32, 63, 64, 255, 256, 2**31 - 1, 2**31, 2**32 - 1, 2**40, 2**62, 2**64 - 1]


def _seeds(kind):
    if kind not in SEEDS:
        SEEDS[kind] = targets.seeds(kind)
    return SEEDS[kind]


@st.composite
def mutated(draw, kind):
    data = bytearray(draw(st.sampled_from(_seeds(kind))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "int", "cut", "insert", "splice"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "int":          # headers are mostly little-endian u32/u64 counts, lengths, dims, offsets
            w = draw(st.sampled_from([4, 8]))
            v = draw(st.sampled_from(HOSTILE_INTS)) % (1 << (8 * w))
            data[i:i + w] = v.to_bytes(w, "little")
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            j = draw(st.integers(0, max(0, len(data) - 1)))
            data[i:i + 16] = data[j:j + 16]
    return bytes(data)


def _fuzz(kind, n):
    @settings(max_examples=n, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(mutated(kind))
    def run(data):
        targets.TARGETS[kind](data)
    run()


@pytest.mark.parametrize("kind, n", [("gguf", 100), ("gguf_header", 300), ("gguf_model", 40), ("safetensors", 100),
                                     ("native", 100)])
def test_fuzz_loader(kind, n):
    _fuzz(kind, n)


def test_fuzz_native_header_fields():
    @settings(max_examples=100, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.binary(min_size=3, max_size=12))
    def run(data):
        targets.native_header_target(data)
    run()
