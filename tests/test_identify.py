"""Identifiability of the twin's costs (xbq.study.identify) and calibration over several seeds."""

import numpy as np
import pytest

from xbq.errors import XbqError
from xbq.study import identify

NAMES = ["a_ns", "b_ns", "c_ns"]


@pytest.fixture(scope="module")
def seed_table():
    from xbq.study.datasets import load_seed

    return load_seed()


def test_standard_errors_of_an_orthogonal_design_are_sigma_over_the_column_norm():
    J = np.zeros((6, 3))
    J[0:2, 0] = 1.0   # |col| = sqrt 2
    J[2:4, 1] = 0.5   # |col| = sqrt 0.5
    J[4:6, 2] = 0.05  # |col| = sqrt 0.005
    info = identify.analyse(J, NAMES, sigma=0.05)
    se = info["se_efolds"]
    assert se["a_ns"] == pytest.approx(0.05 / np.sqrt(2))
    assert se["b_ns"] == pytest.approx(0.05 / np.sqrt(0.5))
    assert se["c_ns"] == pytest.approx(0.05 / np.sqrt(0.005))  # 0.71 e-folds: not determined
    assert info["determined"] == ["a_ns", "b_ns"]
    assert info["selected"] == ["a_ns", "b_ns"]
    assert info["condition"] == pytest.approx(np.sqrt(2 / 0.005))
    s2 = np.array([2.0, 0.5, 0.005])
    assert info["effective"] == pytest.approx(np.sum(s2 / (s2 + 0.05 ** 2)))


def test_two_costs_that_only_act_together_are_not_both_named():
    rng = np.random.default_rng(3)
    base = rng.normal(size=12)
    J = np.column_stack([base, base * (1 + 1e-4 * rng.normal(size=12)), rng.normal(size=12)])
    info = identify.analyse(J, NAMES, sigma=0.05)
    assert info["condition"] > 1e3
    rho = info["correlation"][0][1]
    assert rho < -0.99  # their estimates trade off one for one
    assert {c["a"] for c in info["strong_correlations"]} == {"a_ns"}
    assert not {"a_ns", "b_ns"} <= set(info["determined"])
    # once one is fixed the other is determined, and so is the independent third
    assert len(info["selected"]) == 2 and "c_ns" in info["selected"]
    assert all(v <= identify.THRESHOLD for v in info["selected_se_efolds"].values())


def test_a_cost_the_residuals_do_not_depend_on_is_never_determined():
    J = np.zeros((6, 3))
    J[0:3, 0] = 1.0
    J[3:6, 1] = 0.5  # c_ns: a zero column (no point moves with it)
    info = identify.analyse(J, NAMES, sigma=0.05)
    assert info["se_efolds"]["c_ns"] == np.inf
    assert "c_ns" not in info["determined"] and "c_ns" not in info["selected"]
    assert info["selected"] == ["a_ns", "b_ns"]
    assert info["se_efolds"]["a_ns"] == pytest.approx(0.05 / np.sqrt(3))


def test_select_keeps_everything_when_the_data_determine_everything():
    J = np.eye(3) * 10
    assert identify.select(J, NAMES, sigma=0.05) == NAMES


def test_bad_sigma_and_costs_at_zero_are_refused():
    with pytest.raises(XbqError, match="sigma"):
        identify.analyse(np.eye(3), NAMES, sigma=0)
    from xbq.engines.des.params import DesParams

    with pytest.raises(XbqError, match="vcpu_wake_ns"):
        identify.jacobian(None, DesParams(), ["vcpu_wake_ns"], [0.01], [1])  # default 0


def test_information_criteria_count_every_choice():
    from xbq.study.trust import _information

    a = _information(0.12, 12, 4)
    assert a["aic"] == pytest.approx(12 * np.log(0.01) + 8)
    assert a["bic"] == pytest.approx(12 * np.log(0.01) + 4 * np.log(12))
    assert a["aicc"] == pytest.approx(a["aic"] + 2 * 4 * 5 / 7)
    assert _information(0.12, 12, 11)["aicc"] is None  # n - k - 1 = 0


def test_several_seeds_are_the_mean_of_each_seeds_run(seed_table):
    from xbq.engines.des.params import DesParams
    from xbq.study.calibrate import _simulate_points, seeds_of

    table = seed_table[seed_table["jobs"] <= 4].reset_index(drop=True)
    p = DesParams()
    d = [1000 / m for m in table["iops"]]
    one = [_simulate_points(table, p, d, s) for s in (4, 5)]
    both, se = _simulate_points(table, p, d, (4, 5), se=True)
    assert np.array_equal(both, (one[0] + one[1]) / 2)
    assert np.all(se >= 0)
    assert seeds_of(3) == (3,) and seeds_of([4, 5]) == (4, 5)
    assert not np.array_equal(one[0], one[1])  # the seeds differ, so the mean is over two


def test_jacobian_of_the_twin_matches_the_sign_of_its_mechanism(seed_table):
    """More guest CPU per I/O (submit_ns) can only lower the 1-job points' IOPS."""
    from xbq.engines.des.params import DesParams

    table = seed_table[seed_table["jobs"] == 1].reset_index(drop=True)
    d = identify.jacobian(table, DesParams(), ["submit_ns"], [3000 / m for m in table["iops"]],
                          [1])
    assert d["J"].shape == (2, 1) and d["nfev"] == 3
    assert np.all(d["J"][:, 0] < 0)
