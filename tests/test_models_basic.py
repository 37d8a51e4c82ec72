"""Amdahl and USL against their closed forms and derived quantities."""

import numpy as np
import pytest

from xbq.errors import XbqError
from xbq.models import amdahl, get_model, usl, usl_capped, usl_peak


def test_usl_at_one_job_is_gamma_and_hand_value():
    assert usl(1, 5e4, 0.3, 0.01) == pytest.approx(5e4)
    # N=4: 4*g / (1 + 0.3*3 + 0.01*12) = 4g/2.02
    assert usl(4, 5e4, 0.3, 0.01) == pytest.approx(4 * 5e4 / 2.02)


def test_amdahl_is_usl_without_coherency_and_tends_to_ceiling():
    n = np.arange(1, 200)
    np.testing.assert_allclose(amdahl(n, 1e4, 0.2), usl(n, 1e4, 0.2, 0.0))
    assert amdahl(1e9, 1e4, 0.2) == pytest.approx(1e4 / 0.2, rel=1e-6)
    assert np.all(np.diff(amdahl(n, 1e4, 0.2)) > 0)


def test_usl_peak_matches_numeric_argmax():
    g, a, b = 6e4, 0.05, 0.004
    n_max, x_max = usl_peak(g, a, b)
    assert n_max == pytest.approx(np.sqrt((1 - a) / b))
    grid = np.linspace(1, 100, 200_001)
    x = usl(grid, g, a, b)
    assert grid[np.argmax(x)] == pytest.approx(n_max, abs=1e-3)
    assert x.max() == pytest.approx(x_max, rel=1e-9)


def test_cap_freezes_contenders():
    n = np.array([1, 4, 8, 16, 32, 64.0])
    capped = usl_capped(n, 5e4, 0.3, 0.03, cap=16)
    np.testing.assert_allclose(capped[:4], usl(n[:4], 5e4, 0.3, 0.03))
    np.testing.assert_allclose(capped[4:], capped[3])
    # the registry evaluator agrees with the public function
    spec = get_model("usl-capped")
    np.testing.assert_allclose(spec(n, gamma=5e4, alpha=0.3, beta=0.03, cap=16), capped)


@pytest.mark.parametrize("bad", [0, -1, np.nan])
def test_bad_concurrency_is_rejected(bad):
    with pytest.raises(XbqError):
        usl(bad, 1.0, 0.1, 0.1)


def test_bad_parameters_are_rejected():
    with pytest.raises(XbqError):
        amdahl(4, 1.0, 1.5)
    with pytest.raises(XbqError):
        usl(4, -1.0, 0.1, 0.1)
