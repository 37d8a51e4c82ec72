"""What the models do on the published 2015 table (the targets of issue 3)."""

import numpy as np
import pytest

from xbq.fit import compare, fit
from xbq.study.datasets import load_seed


@pytest.fixture(scope="module")
def seed():
    return load_seed()


def test_plain_usl_misfits_the_single_ring_flat_tail(seed):
    res = fit(seed, "usl", loo=False, forward=False)
    e = res.series["single_ring"]
    assert e["r2"] < 0.8
    # USL must keep falling past its peak: the data lose 3 % from 32 to 64 jobs, the fit
    # loses more than 15 %; and to bend that way it flattens the sharp peak at 4 jobs.
    x = np.array([4.0, 32.0, 64.0])
    obs = seed[(seed.series == "single_ring") & seed.jobs.isin(x)].iops.to_numpy()
    pred = res.predict("single_ring", x)
    assert obs[2] / obs[1] > 0.95 and pred[2] / pred[1] < 0.85
    assert pred[0] < 0.9 * obs[0]


def test_usl_capped_at_vcpus_fits_the_single_ring(seed):
    res = fit(seed, "usl-capped", bootstrap=200, seed=0)
    e = res.series["single_ring"]
    assert e["params"]["cap"] == 16.0  # from the vcpus column, not fitted
    assert e["r2"] >= 0.97
    lo, hi = e["peak_ci"]["x"]
    assert lo <= e["peak_x"] <= hi


def test_joint_xenblk_fits_both_rings_with_six_shared_parameters(seed):
    res = fit(seed, "xenblk", joint=True, bootstrap=200, seed=0)
    group, = res.groups
    assert group["k"] <= 6 and all(owner is None for _, owner in group["free"])
    assert res.series["single_ring"]["r2"] >= 0.95
    assert res.series["multi_ring"]["r2"] >= 0.95
    # one parameter set for both drivers: only the ring count differs
    a, b = (res.series[s]["params"] for s in ("single_ring", "multi_ring"))
    assert {k for k in a if a[k] != b[k]} == {"queues"}
    # it reproduces the multi-ring fall past 8 jobs that continues past 16
    fit_mq = res.predict("multi_ring", np.array([8.0, 16.0, 32.0, 64.0]))
    assert fit_mq[0] > fit_mq[1] > fit_mq[2] > fit_mq[3]


def test_monotone_models_cannot_show_the_fall(seed):
    for model in ("amdahl", "mva", "mcs"):
        res = fit(seed, model, loo=False, forward=False)
        curve = res.predict("multi_ring", np.arange(1.0, 65.0))
        assert np.all(np.diff(curve) >= -1e-6 * curve[1:])
        assert res.series["multi_ring"]["r2"] < 0.6


def test_compare_table_has_every_model_and_series(seed):
    table = compare(seed, bootstrap=20, seed=0)
    assert len(table) == 16
    assert set(table.model) == {"amdahl", "usl", "usl-capped", "mva", "repairman", "ticket",
                                "mcs", "xenblk"}
    assert table.loc[table.model == "xenblk", "fit"].eq("joint").all()
    assert table.loo_rmse.notna().sum() >= 14
