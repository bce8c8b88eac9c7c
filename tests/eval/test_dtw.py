import numpy as np
import pytest

from t2s.eval.dtw import dtw_mean_cost


def _cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a[:, None] - b[None, :])


def test_identical_sequences_cost_nothing():
    a = np.array([0.0, 1.0, 3.0, 2.0])
    assert dtw_mean_cost(_cost(a, a)) == 0.0


def test_a_slower_copy_aligns_at_no_cost():
    fast = np.array([0.0, 1.0, 2.0, 3.0])
    slow = np.array([0.0, 0.0, 1.0, 1.0, 2.0, 3.0, 3.0])
    assert dtw_mean_cost(_cost(fast, slow)) == 0.0


def test_a_constant_offset_costs_the_offset():
    a = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    assert dtw_mean_cost(_cost(a, a + 5.0)) == pytest.approx(5.0)


def test_a_hand_checked_alignment():
    # Best path (0,0) (1,1) (1,2) (2,3): costs 0 + 1 + 0 + 0 over 4 pairs.
    a = np.array([0.0, 2.0, 4.0])
    b = np.array([0.0, 1.0, 2.0, 4.0])
    assert dtw_mean_cost(_cost(a, b)) == pytest.approx(0.25)


def test_bad_matrices_are_refused():
    with pytest.raises(ValueError, match="non-empty 2-D"):
        dtw_mean_cost(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        dtw_mean_cost(np.array([[np.nan]]))
