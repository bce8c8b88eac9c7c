"""Effects and intervals of optimizer_tool.ablate.statistics on numbers worked out by hand."""

import math

import pytest

from optimizer_tool.ablate.claims import Claim, claim_for
from optimizer_tool.ablate.statistics import (
    BETTER,
    ONE_SEED,
    WITHIN_NOISE,
    WORSE,
    against_claim,
    effect,
    mean_interval,
    t_quantile,
)


def test_t_quantiles_are_students():
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(10) == pytest.approx(2.228, abs=1e-3)
    assert t_quantile(500) == t_quantile(30)  # beyond the table: the df=30 value, slightly wide
    with pytest.raises(ValueError):
        t_quantile(0)


def test_mean_interval_of_three_values():
    interval = mean_interval([1.0, 2.0, 3.0])  # mean 2, sd 1
    half = 4.3027 / math.sqrt(3)
    assert interval.mean == 2.0
    assert (interval.lo, interval.hi) == (pytest.approx(2 - half, abs=1e-4), pytest.approx(2 + half, abs=1e-4))
    assert interval.n == 3 and interval.half_width == pytest.approx(half, abs=1e-4)


def test_one_value_has_no_interval_and_none_is_an_error():
    interval = mean_interval([5.0])
    assert (interval.mean, interval.lo, interval.hi) == (5.0, None, None)
    with pytest.raises(ValueError, match="at least one seed"):
        mean_interval([])


def test_lower_is_better_effect_is_paired_by_seed():
    baseline = {0: 100.0, 1: 110.0, 2: 90.0, 3: 50.0}  # seed 3 has no arm run: left out
    arm = {0: 90.0, 1: 99.0, 2: 81.0}
    found = effect("frechet_distance", "lower", baseline, arm)
    assert found.seeds == (0, 1, 2)
    assert found.difference.values == (-10.0, -11.0, -9.0)
    assert found.difference.mean == pytest.approx(-10.0)
    assert found.difference.hi == pytest.approx(-10.0 + 4.3027 / math.sqrt(3), abs=1e-4)
    assert found.improvement.values == pytest.approx((10.0, 10.0, 10.0))  # a 10 % lower distance is +10 %
    assert found.verdict == BETTER


def test_verdicts():
    assert effect("acc", "higher", {0: 0.5, 1: 0.5, 2: 0.5}, {0: 0.4, 1: 0.41, 2: 0.39}).verdict == WORSE
    assert effect("acc", "higher", {0: 0.5, 1: 0.5, 2: 0.5}, {0: 0.6, 1: 0.4, 2: 0.5}).verdict == WITHIN_NOISE
    assert effect("acc", "higher", {0: 0.5}, {0: 0.9}).verdict == ONE_SEED
    assert effect("acc", "higher", {0: 0.5}, {1: 0.9}) is None  # no shared seed
    with pytest.raises(ValueError, match="higher' or 'lower"):
        effect("acc", "up", {0: 1.0}, {0: 1.0})


def test_zero_baseline_leaves_the_improvement_undefined():
    found = effect("back_translation", "higher", {0: 0.0, 1: 0.1}, {0: 0.1, 1: 0.1})
    assert found.improvement is None and found.difference.mean == pytest.approx(0.05)


def test_claims_are_compared_with_the_interval():
    claim = Claim(10, 15, "plan")
    assert against_claim(mean_interval([1.0, 2.0, 3.0]), claim) == "CI below claim"
    assert against_claim(mean_interval([20.0, 21.0, 22.0]), claim) == "CI above claim"
    assert against_claim(mean_interval([0.0, 10.0, 20.0]), claim) == "CI overlaps claim"
    assert against_claim(mean_interval([12.0]), claim) == "cannot tell"
    assert against_claim(mean_interval([12.0, 13.0]), None) == "no claim"


def test_claim_table_is_keyed_by_key_string():
    assert claim_for(("ema",)).label() == "+10-15%"
    assert claim_for(("clipping",)) is None  # the plan gives no number
    assert claim_for(("ema", "cosine")) is None  # nor for a partial combination
    every = ("ema", "cosine", "offset", "vpred", "lr-schedule", "lpips")
    assert claim_for(every).label() == "+25-40%"
