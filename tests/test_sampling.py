"""Sampler: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeding, parameter checks."""
import numpy as np
import pytest

from lowbit.sampling import Sampler


def _logits(n=50, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 3


def test_greedy_is_argmax():
    z = _logits()
    assert Sampler(temperature=0)(z) == int(np.argmax(z))
    assert Sampler(temperature=1.0, top_k=1)(z) == int(np.argmax(z))


def test_seed_reproducible_and_varies():
    z = _logits()
    a = [Sampler(temperature=1.0, seed=7, top_k=0, top_p=1, min_p=0)(z) for _ in range(3)]
    s1, s2 = Sampler(temperature=1.5, seed=1, top_k=0, top_p=1, min_p=0), Sampler(temperature=1.5, seed=1, top_k=0,
                                                                                   top_p=1, min_p=0)
    seq1, seq2 = [s1(z) for _ in range(50)], [s2(z) for _ in range(50)]
    assert a[0] == a[1] == a[2] and seq1 == seq2 and len(set(seq1)) > 3


def test_temperature_one_matches_softmax():
    z = np.array([2.0, 1.0, 0.0, -1.0], np.float32)
    s = Sampler(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=3)
    n = 8000
    counts = np.bincount([s(z) for _ in range(n)], minlength=4) / n
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert np.abs(counts - p).max() < 0.025          # ~4.6 sigma at n = 8000


def test_top_k_top_p_min_p_restrict_candidates():
    z = np.log(np.array([0.5, 0.25, 0.15, 0.07, 0.03]))
    ids, p = Sampler(temperature=1.0, top_k=2, top_p=1.0, min_p=0.0).probs(z)
    assert list(ids) == [0, 1] and np.isclose(p.sum(), 1)
    ids, _ = Sampler(temperature=1.0, top_k=0, top_p=0.8, min_p=0.0).probs(z)
    assert list(ids) == [0, 1, 2]                     # 0.5 + 0.25 < 0.8 <= 0.9
    ids, _ = Sampler(temperature=1.0, top_k=0, top_p=1.0, min_p=0.2).probs(z)
    assert list(ids) == [0, 1, 2]                     # p >= 0.2 * 0.5
    ids, p = Sampler(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0).probs(z)
    np.testing.assert_allclose(p, [0.5, 0.25, 0.15, 0.07, 0.03], rtol=1e-6)


def test_repetition_penalty():
    z = np.array([3.0, 2.9, -1.0, -1.1])
    s = Sampler(temperature=0, repeat_penalty=1.5)
    assert s(z, prev=[0]) == 1                        # 3.0 / 1.5 < 2.9
    assert s(z, prev=[]) == 0
    zz = s.penalize(z.copy(), [2])
    assert zz[2] == pytest.approx(-1.5)               # negative logits are multiplied


@pytest.mark.parametrize("kw", [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(min_p=2),
                                dict(top_k=-1), dict(repeat_penalty=0)])
def test_bad_parameters_rejected(kw):
    with pytest.raises(ValueError):
        Sampler(**kw)
