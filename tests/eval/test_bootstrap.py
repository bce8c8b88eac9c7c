import numpy as np
import pytest

from t2s.eval import bootstrap


def _sample(n: int) -> np.ndarray:
    return np.random.default_rng(1).normal(3.0, 2.0, n)


def test_the_interval_holds_the_mean_and_is_reproducible():
    values = _sample(50)
    estimate = bootstrap((values,))
    assert estimate.value == pytest.approx(values.mean())
    assert estimate.lo < estimate.value < estimate.hi
    assert bootstrap((values,)) == estimate
    assert bootstrap((values,), seed=1) != estimate


def test_more_clips_narrow_the_interval():
    small, large = bootstrap((_sample(20),)), bootstrap((_sample(500),))
    assert (large.hi - large.lo) < 0.5 * (small.hi - small.lo)


def test_the_interval_matches_the_standard_error():
    values = _sample(400)
    estimate = bootstrap((values,), n_resamples=2000)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert (estimate.hi - estimate.lo) / 2 == pytest.approx(half_width, rel=0.15)


def test_debias_recentres_a_statistic_that_resampling_inflates():
    values = np.arange(30.0)
    distinct = lambda a: float(len(np.unique(a)))  # noqa: E731  resampling always lowers it
    plain = bootstrap((values,), distinct, n_resamples=200)
    assert plain.hi < plain.value  # the plain percentile interval misses the statistic
    centred = bootstrap((values,), distinct, n_resamples=200, debias=True)
    assert centred.lo <= centred.value <= centred.hi


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="empty"):
        bootstrap((np.array([]),))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap((np.ones(3),), confidence=1.5)
