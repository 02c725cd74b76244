"""The stress of a map estimated from a sample of pairs, against the exact stress."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from microscale.metric_mds import stress
from microscale.quality import sample_points, sampled_stress


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)) * np.array([3.0, 2.0, 1.0, 0.5, 0.5, 0.3])
    X = x[:, :2] + 0.3 * rng.normal(size=(n, 2))  # a 2-D map with some stress
    return cdist(x, x), X


def test_the_whole_set_as_sample_gives_the_exact_stress():
    D, X = _data(120)
    est = sampled_stress(D, [X, 2 * X])
    assert est[0].stress == pytest.approx(stress(D, X), rel=1e-12)
    assert est[1].stress == pytest.approx(stress(D, 2 * X), rel=1e-12)
    assert est[0].n_points == 120 and est[0].n_pairs == 120 * 119 // 2


def test_the_interval_covers_the_exact_stress_at_its_level():
    D, X = _data()
    exact = stress(D, X)
    covered, widths = 0, []
    for seed in range(100):
        s = sample_points(400, 60, random_state=seed)
        est = sampled_stress(D[np.ix_(s, s)], [X[s]])[0]
        covered += est.low <= exact <= est.high
        widths.append(est.high - est.low)
    assert covered >= 88  # 95 % nominal; the jackknife of a ratio is a little optimistic
    wide = sampled_stress(D[np.ix_(s, s)], [X[s]], confidence=0.99)[0]
    assert wide.high - wide.low > widths[-1]  # a higher level, a wider interval
    s = sample_points(400, 200, random_state=0)
    assert sampled_stress(D[np.ix_(s, s)], [X[s]])[0].high - sampled_stress(
        D[np.ix_(s, s)], [X[s]]
    )[0].low < np.mean(widths)  # more points, a narrower interval


def test_bad_samples_are_refused():
    D, X = _data(10)
    with pytest.raises(ValueError, match=r"\(s, s\) with s >= 3"):
        sampled_stress(D[:2, :2], [X[:2]])
    with pytest.raises(ValueError, match="one row per sampled point"):
        sampled_stress(D, [X[:5]])
    with pytest.raises(ValueError, match="'confidence' parameter must be in"):
        sampled_stress(D, [X], confidence=1.0)
    with pytest.raises(ValueError, match="Every sampled distance is 0"):
        sampled_stress(np.zeros((4, 4)), [np.zeros((4, 2))])


def test_sample_points_are_distinct_sorted_and_seeded():
    a = sample_points(1000, 50, random_state=3)
    assert len(set(a.tolist())) == 50 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, sample_points(1000, 50, random_state=3))
    np.testing.assert_array_equal(sample_points(5, 50), np.arange(5))
