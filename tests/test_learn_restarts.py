"""quantize_tensor(restarts=): several k-means seedings on the same sample, the lowest final sample error kept."""
import numpy as np
import pytest

from lowbit.cli import main
from lowbit.quantize import quantize_tensor
from lowbit.quantize.learn import RESTARTS
from lowbit.registry import embedded_model


def _w(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_t(3, (96, 512)) * rng.uniform(0.3, 3, (96, 1))).astype(np.float32)


def test_best_of_restarts_is_kept_and_seed0_is_one_of_them():
    w = _w()
    one = quantize_tensor(w, "cb4", 8, rounds=3, sample=1024, restarts=1)
    many = quantize_tensor(w, "cb4", 8, rounds=3, sample=1024, restarts=3)
    errs = many.stats["restart_errs"]
    assert len(errs) == 3 and errs[0] == one.stats["restart_errs"][0]      # seeding 0 is the restarts=1 run
    assert many.stats["sample_err_rounds"][-1] == min(errs)
    assert many.stats["seed"] == int(np.argmin(errs))
    if many.stats["seed"] == 0:
        np.testing.assert_array_equal(many.tables, one.tables)
    assert len(set(errs)) > 1                                              # the seedings really differ


def test_one_codebook_learns_once():
    ct = quantize_tensor(_w(1), "cb2", 1, rounds=2, sample=512, restarts=4)
    assert len(ct.stats["restart_errs"]) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_bad_restarts(bad):
    with pytest.raises(ValueError, match="restarts"):
        quantize_tensor(_w(), "cb4", 4, restarts=bad)


def test_cli_restarts_checked(tmp_path, capsys):
    assert main(["quantize", str(embedded_model()), "-o", str(tmp_path / "x.gguf"), "--format", "q4_0",
                 "--restarts", "2"]) == 1
    assert "--restarts" in capsys.readouterr().err
    assert main(["quantize", str(embedded_model()), "-o", str(tmp_path / "y.gguf"), "--format", "cb4",
                 "--restarts", "2", "--codebooks", "2", "--rounds", "1", "--sample", "256"]) == 0
    assert (tmp_path / "y.gguf").exists()


def test_default_restarts_per_format():
    w = _w(2)
    for fmt in ("cb4", "cb2"):
        got = quantize_tensor(w, fmt, 4, rounds=1, sample=256).stats["restart_errs"]
        assert len(got) == RESTARTS[fmt]
