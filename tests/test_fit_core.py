"""The fitting engine: recovery on synthetic data, statistics, layout, errors, JSON."""

import json

import numpy as np
import pandas as pd
import pytest

from xbq.errors import XbqError
from xbq.fit import FitResult, aicc, build_problems, fit, profile
from xbq.fit._engine import lm_batch, solve, starts
from xbq.fit.synthetic import synthetic_table
from xbq.models import get_model

X = np.array([1, 2, 4, 8, 12, 16, 24, 32, 48, 64.0])

#: True parameters of the synthetic tables (identifiable regimes of each model).
TRUE = {
    "amdahl": {"gamma": 5e4, "sigma": 0.1},
    "usl": {"gamma": 5e4, "alpha": 0.1, "beta": 0.005},
    "usl-capped": {"gamma": 5e4, "alpha": 0.3, "beta": 0.03, "cap": 16.0},
    "mva": {"t_cpu": 16.0, "t_lock": 2.0, "vcpus": 8.0},
    "repairman": {"think": 16.0, "service": 2.0, "servers": 1.0, "cap": 16.0},
    "ticket": {"think": 8.0, "serial": 9.0, "handoff": 0.8, "cap": 16.0},
    "mcs": {"think": 16.0, "serial": 2.0, "handoff": 0.0, "cap": 16.0},
    "xenblk": {"t_cpu": 7.6, "t_ring": 8.4, "t_shared": 1.7, "t_handoff": 0.3, "t_wake": 2.3,
               "pcpus": 13.3, "vcpus": 16.0},
    "host": {"t_cpu": 1.2, "t_sched": 2.3, "t_irq": 0.5, "t_wake": 1.2, "host_cpus": 2.0,
             "vcpus": 16.0},
}
#: Models fitted jointly over the two ring series.
JOINT = ("xenblk", "host")
MODELS = list(TRUE)
RINGS = {"single_ring": {"queues": 1.0}, "multi_ring": {"queues": 16.0}}


def synthetic(model, noise, seed, x=X):
    """A table drawn from ``model`` at TRUE (two ring series for the joint models)."""
    return synthetic_table(model, TRUE[model], x, noise=noise, seed=seed,
                           series=RINGS if model in JOINT else None)


@pytest.mark.parametrize("model", MODELS)
def test_noise_free_data_recovers_the_truth(model):
    res = fit(synthetic(model, 0.0, 1), model, joint=model in JOINT, loo=False,
              forward=False)
    for e in res.series.values():
        for p in e["free"]:
            assert e["params"][p] == pytest.approx(TRUE[model][p], rel=1e-3, abs=1e-9)
        assert e["r2"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("model", MODELS)
def test_noisy_data_truth_inside_bootstrap_intervals(model):
    res = fit(synthetic(model, 0.02, 1), model, joint=model in JOINT, bootstrap=200,
              seed=1, level=0.99, loo=False, forward=False)
    for e in res.series.values():
        for p in e["free"]:
            lo, hi = e["ci"][p]
            assert lo <= TRUE[model][p] <= hi, (p, lo, hi)
            assert lo < hi
        # the Jacobian errors are of the same order as the bootstrap widths
        for p in e["free"]:
            width = e["ci"][p][1] - e["ci"][p][0]
            assert 0.1 < width / (2 * 2.58 * e["stderr"][p]) < 10


def test_fixed_and_shared_layout_in_joint_fits():
    df = synthetic("ticket", 0.01, 2)
    df2 = df.assign(series="other", iops=df.iops * 0.9)
    both = pd.concat([df, df2])
    prob, = build_problems(get_model("ticket"), both, joint=True, fix={"handoff": 0.8})
    assert prob.labels == ["think", "serial[other]", "serial[s]"]
    res = fit(both, "ticket", joint=True, fix={"handoff": 0.8}, loo=False, forward=False)
    assert res.series["s"]["params"]["handoff"] == 0.8
    assert res.series["s"]["params"]["think"] == res.series["other"]["params"]["think"]
    assert res.series["s"]["params"]["serial"] != res.series["other"]["params"]["serial"]
    assert "handoff" not in res.series["s"]["stderr"]


def test_columns_supply_constants_and_fix_overrides_them():
    df = synthetic("usl-capped", 0.0, 1).assign(vcpus=8.0)
    res = fit(df, "usl-capped", loo=False, forward=False)
    assert res.series["s"]["params"]["cap"] == 8.0
    res = fit(df, "usl-capped", fix={"cap": 16}, loo=False, forward=False)
    assert res.series["s"]["params"]["cap"] == 16.0
    assert res.series["s"]["r2"] == pytest.approx(1.0)


def test_aicc_by_hand_and_undefined_case():
    aic, c, note = aicc(2.0, 12, 4)
    assert aic == pytest.approx(12 * np.log(2 / 12) + 8)
    assert c == pytest.approx(aic + 2 * 4 * 5 / 7)
    assert note is None
    aic, c, note = aicc(2.0, 6, 5)
    assert c is None and "undefined" in note
    # a fit with n - k - 1 <= 0 reports None and a note, and does not crash
    df = synthetic("usl", 0.01, 3, x=np.array([1, 2, 4, 8.0]))
    res = fit(df, "usl", loo=True, bootstrap=50)
    e = res.series["s"]
    assert e["aicc"] is None and "undefined" in e["aicc_note"]
    assert e["loo_rmse"] is not None and "exactly determined" in e["loo_note"]
    res = fit(df.head(3), "usl", loo=True, bootstrap=50)
    e = res.series["s"]
    assert e["aicc"] is None and e["loo_rmse"] is None and e["loo_note"]
    assert e["stderr"]["beta"] is None and e["ci"]["beta"] is None
    assert any("no residual degrees of freedom" in w for w in res.warnings)


def test_r2_rmse_and_loo_by_hand():
    df = synthetic("amdahl", 0.03, 4)
    res = fit(df, "amdahl", forward=False)
    e = res.series["s"]
    y = df.iops.to_numpy()
    hat = res.predict("s", df.jobs.to_numpy())
    assert e["rmse"] == pytest.approx(np.sqrt(np.mean((y - hat) ** 2)))
    assert e["r2"] == pytest.approx(1 - np.sum((y - hat) ** 2) / np.sum((y - y.mean()) ** 2))
    # LOO: refit without point i with scipy and predict it
    prob, = build_problems(get_model("amdahl"), df)
    preds = []
    for i in range(len(df)):
        mask = np.ones(len(df))
        mask[i] = 0
        r = solve(prob, starts(prob, 4, np.random.default_rng(0)), mask=mask)
        preds.append(prob.predict_all(r.x[None, :])[0, i])
    np.testing.assert_allclose(e["loo"]["pred"], preds, rtol=1e-4)
    assert e["loo_rmse"] > e["rmse"]


def test_forward_test_uses_only_small_x():
    df = synthetic("mcs", 0.0, 1)
    res = fit(df, "mcs", loo=False)
    f = res.series["s"]["forward"]
    assert f["x"] == [24.0, 32.0, 48.0, 64.0]
    np.testing.assert_allclose(f["rel_err"], 0.0, atol=1e-4)
    # a training set too small for the parameters gives a note, not a crash
    small = df[df.jobs.isin([1, 32, 64])]
    res = fit(small, "mcs", loo=False)
    assert res.series["s"]["forward"] is None and res.series["s"]["forward_note"]


def test_batched_lm_agrees_with_scipy():
    df = synthetic("ticket", 0.02, 5)
    prob, = build_problems(get_model("ticket"), df)
    rng = np.random.default_rng(0)
    ref = solve(prob, starts(prob, 6, rng))
    x0 = np.repeat((ref.x * 1.3)[None, :], 3, axis=0)
    th, cost = lm_batch(prob, x0, np.repeat(prob.y_all[None, :], 3, axis=0))
    np.testing.assert_allclose(th, np.repeat(ref.x[None, :], 3, axis=0), rtol=1e-4)
    np.testing.assert_allclose(cost, 2 * ref.cost, rtol=1e-6)


def test_parameter_at_bound_and_unmoved_are_warned():
    # data with no retrograde region: USL's beta ends at its lower bound 0
    df = synthetic("amdahl", 0.0, 1)
    res = fit(df, "usl", loo=False, forward=False)
    assert any("beta is at a bound" in w for w in res.warnings)
    assert "[[Warnings]]" in res.report()


def test_report_and_json_round_trip():
    df = synthetic("xenblk", 0.02, 6)
    res = fit(df, "xenblk", joint=True, bootstrap=50, seed=3)
    text = res.to_json()
    back = FitResult.from_json(text)
    assert back.to_dict() == json.loads(text)
    assert back.report() == res.report()
    pd.testing.assert_frame_equal(back.predictions(), res.predictions())
    rep = res.report()
    for section in ("[[Model]]", "[[Fit statistics]]", "[[Variables]]", "[[Correlations]]",
                    "[[Series]]"):
        assert section in rep
    frame = res.predictions()
    assert set(frame.kind) == {"data", "curve"}
    data = frame[frame.kind == "data"]
    np.testing.assert_allclose(data.residual, data.iops - data.fit)
    assert frame.loc[frame.kind == "curve", "lo"].notna().all()


def test_bad_input_is_one_error():
    df = synthetic("usl", 0.0, 1)
    with pytest.raises(XbqError, match="free parameters"):
        fit(df.head(2), "usl")
    with pytest.raises(XbqError, match="unknown model"):
        fit(df, "nope")
    with pytest.raises(XbqError, match="no parameter"):
        fit(df, "usl", fix={"cap": 3})
    with pytest.raises(XbqError, match="positive"):
        fit(df.assign(iops=-df.iops), "usl")
    with pytest.raises(XbqError, match="outside its bounds"):
        fit(df, "usl", fix={"alpha": 3})
    with pytest.raises(XbqError, match="integer"):
        fit(df.assign(jobs=df.jobs + 0.5), "ticket")


def test_profile_interval_contains_truth_and_matches_wald_roughly():
    df = synthetic("usl", 0.02, 7)
    res = fit(df, "usl", loo=False, forward=False)
    pr = profile(df, "usl", "beta")
    lo, hi = pr["interval"]
    assert lo < TRUE["usl"]["beta"] < hi
    se = res.series["s"]["stderr"]["beta"]
    assert 0.3 < (hi - lo) / (2 * 1.96 * se) < 3
    assert pr["rss"].min() == pytest.approx(pr["rss"][np.argmin(np.abs(pr["values"] -
                                                                      pr["best"]))])
    with pytest.raises(XbqError):
        profile(df, "usl", "cap")


def test_seeded_fits_are_reproducible():
    df = synthetic("ticket", 0.02, 8)
    a = fit(df, "ticket", bootstrap=100, seed=11).to_dict()
    b = fit(df, "ticket", bootstrap=100, seed=11).to_dict()
    assert a == b
    assert X.size == len(df)


@pytest.mark.parametrize("model", ["usl", "ticket", "xenblk"])
def test_batched_bootstrap_refits_reach_scipys_optimum(model):
    # replicates of the seed fit (including ones that end at a bound): the vectorised LM
    # must land where a tightly converged scipy TRF does
    from scipy.optimize import least_squares

    from xbq.study.datasets import load_seed

    for prob in build_problems(get_model(model), load_seed(), joint=model == "xenblk"):
        best = solve(prob, starts(prob, 8, np.random.default_rng(0)))
        rng = np.random.default_rng(1)
        fitted = prob.predict_all(best.x[None, :])[0]
        s = np.sqrt(2 * best.cost / (prob.n - prob.k))
        ys = fitted * np.exp(rng.normal(0, s, size=(24, prob.n)))
        th, cost = lm_batch(prob, np.repeat(best.x[None, :], 24, axis=0), ys)
        for i in range(0, 24, 3):
            def fun(t, prob=prob, y=ys[i]):
                return prob.residuals(t[None, :], y=y)[0]

            ref = least_squares(fun, best.x, bounds=(prob.lower, prob.upper), x_scale="jac",
                                ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=5000)
            assert cost[i] <= 2 * ref.cost * (1 + 1e-6) + 1e-300


def test_a_parameter_the_data_never_move_fails_the_fit_without_an_r2(cli, tmp_path,
                                                                     monkeypatch):
    """A free parameter the model's output does not depend on stays at its start: the fit is
    reported as failed (no R²), and xbq fit exits non-zero saying which parameter."""
    from xbq.models import registry as R

    usl = R.get_model("usl")
    idle = R.ModelSpec("usl-idle", (
        R.ParamSpec("idle", 0.3, 0.0, 1.0, "1", "a parameter nothing depends on"),),
        lambda x, P: np.broadcast_to(usl(x), (P.shape[0], np.size(x))).copy(),
        "a fixed USL curve with one parameter it ignores")
    monkeypatch.setitem(R.MODELS, "usl-idle", idle)
    df = synthetic("usl", 0.01, 2)
    res = fit(df, idle, loo=False, forward=False)
    e = next(iter(res.series.values()))
    assert "idle never moved" in e["failed"] and e["r2"] is None and res.r2 is None
    assert "FIT FAILED" in res.report() and "R² =" not in res.report()
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    r = cli("fit", path, "--model", "usl-idle")
    assert r.rc == 1 and "FIT FAILED" in r.out and "idle never moved" in r.err
    # one idle parameter beside fitted ones: the curve is fitted (an R²), the idle one is
    # named as not determined and shown without a standard error
    extra = R.ModelSpec("usl-extra", usl.params + (idle.params[0],),
                        lambda x, P: usl.evaluate(x, P[:, :3]), "USL and an ignored parameter")
    monkeypatch.setitem(R.MODELS, "usl-extra", extra)
    res = fit(df, extra, loo=False, forward=False)
    e = next(iter(res.series.values()))
    assert "failed" not in e and e["r2"] > 0.9
    assert any("idle never moved" in w and "not determined" in w for w in res.warnings)
    assert "idle" in res.report() and "not determined, no standard error" in res.report()
