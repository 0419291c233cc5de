"""python -m lowbit.quantize.bench (cb4/cb2 vs q4_0 and q8_0): table ranges per path, and one tiny run."""
import numpy as np
import pytest

from lowbit.formats import cb
from lowbit.quantize import bench


@pytest.mark.parametrize("fmt,bits,lo,hi", [("cb4", 8, -127, 127), ("cb4", 7, -64, 63), ("cb2", 7, -64, 63),
                                            ("cb2", 5, -16, 16), ("cb2", None, *cb.TABLE_RANGE["cb2"])])
def test_random_weight_tables_follow_the_requested_range(fmt, bits, lo, hi):
    w = bench.random_weight(fmt, 64, 256, np.random.default_rng(0), C=16, table_bits=bits)
    t = w.aux.reshape(16, 16)[:, : cb.ENTRIES[fmt]].astype(int)
    assert t.min() >= lo and t.max() <= hi
    assert t.min() < lo + 4 and t.max() > hi - 4        # the draw spans the range, not a corner of it


def test_bench_prints_a_row_of_ratios(capsys):
    bench.main(["--reps", "1", "--shapes", "64x128", "--cb2-table-bits", "5"])
    out = capsys.readouterr().out.strip().splitlines()
    assert "q8_0=" in out[0] and "cb2 5" in out[0]
    row = out[-1].split()
    assert row[:3] == ["64", "x", "128"]
    vals = [float(v) for v in row[3:]]
    assert len(vals) == 4 + 6 and all(v > 0 for v in vals)
