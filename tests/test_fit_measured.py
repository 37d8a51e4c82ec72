"""``xbq fit`` reads what ``xbq measure`` and ``xbq simulate`` write (issue 20): ``mode`` is the
series, repetitions are fitted as means weighted by their standard errors, and IOPS in the
millions are IOPS (no "data scale" note)."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xbq.fit import compare as compare_models
from xbq.fit import fit, profile
from xbq.fit.core import IOPS_RANGE, iops_sized, scale_note
from xbq.fit.repeats import point_means
from xbq.models import get_model
from xbq.study.datasets import load_iops_table, load_seed

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
import compare as golden  # noqa: E402

#: USL truth per mode: the single ring peaks near 9 jobs, the per-queue rings keep climbing.
TRUTH = {"sq": dict(gamma=2.0e6, alpha=0.3, beta=0.01),
         "mq": dict(gamma=1.0e6, alpha=0.05, beta=5e-4)}
JOBS = (1, 2, 4, 8, 16, 32, 64)
REPS = 5
NOISE = 0.03
#: Relative tolerance of each recovered parameter (7 means of 5 repetitions at 3 % noise).
TOL = {"gamma": 0.05, "alpha": 0.15, "beta": 0.15}


def measure_table(reps: int = REPS, noise: float = NOISE, seed: int = 0) -> pd.DataFrame:
    """Rows shaped like ``xbq measure`` output: USL IOPS of :data:`TRUTH` times log-normal noise."""
    usl = get_model("usl")
    rng = np.random.default_rng(seed)
    rows = []
    for mode, p in TRUTH.items():
        y = usl(np.array(JOBS, float), **p)
        for rep in range(reps):
            for jobs, v in zip(JOBS, y, strict=True):
                rows.append(dict(engine="native", mode=mode, jobs=jobs, rep=rep,
                                 iops=v * np.exp(noise * rng.standard_normal()),
                                 vcpus=16, queues=1 if mode == "sq" else 16))
    return pd.DataFrame(rows)


@pytest.fixture
def measured(tmp_path):
    path = tmp_path / "measure.csv"
    measure_table().to_csv(path, index=False)
    return path


def test_a_measure_csv_fits_each_mode_on_its_means_weighted_by_their_errors(measured, cli):
    res = cli("fit", measured, "--model", "usl", "--bootstrap", "100")
    assert res.rc == 0, res.err
    assert ("points: 5 repetitions per point: fitted the means, weighted by their standard "
            "errors") in res.out
    assert "weighting = standard errors of the means" in res.out
    assert "[[Fit statistics]] mq" in res.out and "[[Fit statistics]] sq" in res.out
    assert "points = 7 (means of 35 rows)" in res.out
    assert "data scale" not in res.out
    res = cli("fit", measured, "--model", "usl", "--bootstrap", "0", "--json")
    assert res.rc == 0, res.err
    d = json.loads(res.out)
    assert sorted(d["series"]) == ["mq", "sq"]
    assert d["weighting"] == "se" and "weighted by their standard errors" in d["points"]
    for mode, truth in TRUTH.items():
        got = d["series"][mode]["params"]
        for name, want in truth.items():
            assert got[name] == pytest.approx(want, rel=TOL[name]), (mode, name)
        # the Jacobian errors are those of a parameter in millions, not 1e-10
        se = d["series"][mode]["stderr"]["gamma"]
        assert 1e-3 < se / got["gamma"] < 0.1, (mode, se)
        data = next(g["data"][mode] for g in d["groups"] if mode in g["series"])
        assert data["x"] == list(map(float, JOBS)) and data["reps"] == [REPS] * len(JOBS)
        assert all(v > 0 for v in data["se"])
    assert not any("data scale" in w for w in d["warnings"])


def test_the_means_and_their_standard_errors():
    m = point_means(np.array([4.0, 1.0, 4.0, 1.0, 4.0, 2.0]),
                    np.array([10.0, 5.0, 14.0, 7.0, 12.0, 3.0]))
    np.testing.assert_array_equal(m.x, [1.0, 2.0, 4.0])
    np.testing.assert_allclose(m.y, [6.0, 3.0, 12.0])
    np.testing.assert_array_equal(m.n, [2, 1, 3])
    np.testing.assert_allclose(m.se[[0, 2]], [np.sqrt(2.0) / np.sqrt(2.0), 2.0 / np.sqrt(3.0)])
    assert np.isnan(m.se[1])


def test_one_repetition_is_one_row_per_point(tmp_path, cli):
    """``--reps 1``: no means, no standard errors; the same fit as the bare tidy table."""
    table = measure_table(reps=1)
    path = tmp_path / "one.csv"
    table.to_csv(path, index=False)
    res = cli("fit", path, "--model", "usl", "--bootstrap", "20", "--json")
    assert res.rc == 0, res.err
    got = json.loads(res.out)
    bare = table[["mode", "jobs", "iops"]].rename(columns={"mode": "series"})
    want = fit(bare.sort_values(["series", "jobs"], kind="stable"), "usl", bootstrap=20)
    assert got == json.loads(json.dumps(want.to_dict()))
    assert got["weighting"] == "relative" and "points" not in got


def test_a_point_without_spread_falls_back_to_the_requested_weighting(tmp_path, cli):
    table = measure_table()
    single = (table["jobs"] == 64) & (table["mode"] == "mq") & (table["rep"] > 0)
    path = tmp_path / "m.csv"
    table[~single].to_csv(path, index=False)
    res = cli("fit", path, "--model", "usl", "--bootstrap", "0", "--json")
    assert res.rc == 0, res.err
    d = json.loads(res.out)
    assert d["weighting"] == "relative"
    assert d["points"] == ("1-5 repetitions per point: fitted the means with relative errors, "
                           "unweighted by their spread (1 of 14 points have fewer than 5 "
                           "repetitions or zero spread)")
    flat = measure_table(noise=0.0)
    res = fit(flat.rename(columns={"mode": "series"}), "usl", loo=False, forward=False)
    assert res.weighting == "relative" and "14 of 14 points" in res.points
    assert "points: 5 repetitions per point" in res.report()


def test_three_repetitions_fit_the_means_and_report_their_errors(tmp_path, cli):
    """``xbq measure --reps 3``: too few for weights; the means, with relative errors."""
    path = tmp_path / "three.csv"
    measure_table(reps=3).to_csv(path, index=False)
    res = cli("fit", path, "--model", "usl", "--bootstrap", "0", "--json")
    assert res.rc == 0, res.err
    d = json.loads(res.out)
    assert d["weighting"] == "relative" and "14 of 14 points have fewer than 5" in d["points"]
    for mode in TRUTH:
        data = next(g["data"][mode] for g in d["groups"] if mode in g["series"])
        assert data["reps"] == [3] * len(JOBS) and all(v > 0 for v in data["se"])


def test_one_row_per_point_fits_as_before():
    """No repetitions: the fit is the one recorded in the golden copy, with no new keys."""
    want = json.loads((Path(golden.__file__).parent / "fit.json").read_text())["compare"]
    want = [r for r in want if r["model"] == "usl"]
    got = json.loads(json.dumps(compare_models(load_seed(), ["usl"], bootstrap=50, seed=0)
                                .to_dict(orient="records")))
    seed = load_seed()
    assert not golden.mismatches(got, want, float(seed["iops"].max()))
    res = fit(seed, "usl", loo=False, forward=False)
    assert res.weighting == "relative" and res.points is None
    assert "points" not in res.to_dict() and "points:" not in res.report()
    assert all(set(d) == {"x", "y"} for g in res.groups for d in g["data"].values())


@pytest.mark.parametrize("factor", [30.0, 300.0])
def test_standard_errors_of_millions_of_iops_scale_with_the_data(factor):
    """The seed table in the millions: every standard error moves with its unit, none
    collapses to rounding (``pinv`` of an unscaled ``J^T J`` cut the throughput off)."""
    seed = load_seed()
    ref = fit(seed, "usl", loo=False, forward=False)
    big = fit(seed.assign(iops=seed["iops"] * factor), "usl", loo=False, forward=False)
    for s, e in ref.series.items():
        for p, se in e["stderr"].items():
            want = se * (factor if p == "gamma" else 1.0)
            assert big.series[s]["stderr"][p] == pytest.approx(want, rel=1e-5), (s, p)


def test_mode_is_the_series_unless_a_column_is_named(measured, tmp_path, cli):
    assert sorted(load_iops_table(measured)["series"].unique()) == ["mq", "sq"]
    assert set(load_iops_table(measured, series=None)["series"]) == {"all"}
    only_mq = tmp_path / "mq.csv"
    measure_table().query("mode == 'mq'").to_csv(only_mq, index=False)
    res = cli("fit", only_mq, "--model", "usl", "--series", "engine", "--bootstrap", "0",
              "--json")
    assert res.rc == 0, res.err
    assert list(json.loads(res.out)["series"]) == ["native"]


@pytest.mark.parametrize("edit,needle", [
    (lambda t: t.assign(mode="all"), "differ in 'queues'"),
    (lambda t: t.assign(rep=0), "have the same rep"),
])
def test_rows_that_are_not_repetitions_are_refused(tmp_path, cli, edit, needle):
    path = tmp_path / "bad.csv"
    edit(measure_table()).to_csv(path, index=False)
    cli("fit", path, "--model", "usl").one_line_error(needle)


def test_profile_of_a_weighted_fit(measured):
    table = load_iops_table(measured)
    prof = profile(table, "usl", "alpha", series="sq")
    lo, hi = prof["interval"]
    assert lo < TRUTH["sq"]["alpha"] * 1.05 and hi > TRUTH["sq"]["alpha"] * 0.95
    assert lo < prof["best"] < hi


@pytest.mark.parametrize("lo,hi", [(1e3, 4e3), (2e4, 9e4), (1.2e6, 3.3e6), (2e7, 1e8)])
def test_iops_sized_data_get_no_data_scale_note(lo, hi):
    y = lo + (hi - lo) * np.array([0.0, 0.45, 0.75, 0.95, 1.0])
    assert iops_sized(y)
    assert scale_note(100.0, y) is None and scale_note(1e-2, y) is None
    table = pd.DataFrame({"jobs": [1, 2, 4, 8, 16], "iops": y})
    res = fit(table, "usl", loo=False, forward=False)
    assert not any("data scale" in w for w in res.warnings)


def test_speedups_still_get_the_data_scale_note():
    y = np.array([1.0, 1.9, 3.5, 6.0, 8.0, 9.0])
    assert not iops_sized(y) and y.max() < IOPS_RANGE[0]
    assert "data scale 0.0001" in scale_note(1e-4, y)
    res = fit(pd.DataFrame({"cores": [1, 2, 4, 8, 16, 32], "speedup": y}).rename(
        columns={"speedup": "iops"}), "usl", loo=False, forward=False)
    assert any("data scale" in w for w in res.warnings)


def test_an_explicit_weighting_is_used_on_the_means(measured, cli):
    """Five repetitions a point would weight by standard errors; asking for relative errors
    fits the same means with relative errors instead, and says so."""
    res = cli("fit", measured, "--model", "usl", "--bootstrap", "0", "--weighting", "relative",
              "--json")
    assert res.rc == 0, res.err
    d = json.loads(res.out)
    assert d["weighting"] == "relative"
    assert d["points"] == ("5 repetitions per point: fitted the means with relative errors, as "
                           "asked (standard errors reported)")


def test_a_parameter_at_its_bound_shows_no_standard_error():
    """USL with no contention: alpha ends on its bound 0, where a standard error (and its
    relative size, 1e17 % and more) means nothing; the report says so instead."""
    usl = get_model("usl")
    x = np.array([1, 2, 4, 8, 16, 32, 64], float)
    df = pd.DataFrame({"series": "s", "jobs": x,
                       "iops": usl(x, gamma=1e6, alpha=0.0, beta=1e-3)})
    report = fit(df, "usl", loo=False, forward=False).report()
    line = next(s for s in report.splitlines() if s.strip().startswith("alpha"))
    assert "at its bound: no standard error" in line and "+/-" not in line and "%" not in line
    gamma = next(s for s in report.splitlines() if s.strip().startswith("gamma"))
    assert "+/-" in gamma
