"""Scale-free fitting: every model fits throughput in any unit (speed-up, ops/s, IOPS) over
any concurrency axis (jobs, cores, threads) and reports parameters in the data's units."""

import json

import numpy as np
import pandas as pd
import pytest
from test_fit_core import JOINT, MODELS, TRUE, synthetic

from xbq.cli import main
from xbq.fit import fit
from xbq.fit.core import data_scale, unit_factor
from xbq.models import get_model
from xbq.study.datasets import load_seed

#: A speed-up table (values ~1-20) and an ops/s table (~10^7-10^8).
SCALES = (1e-4, 1e3)


def scaled_truth(model, factor):
    spec = get_model(model)
    return {k: v * unit_factor(spec.param(k).unit, factor) for k, v in TRUE[model].items()}


@pytest.mark.parametrize("model", MODELS)
def test_seed_table_in_other_units_gives_the_same_fit(model):
    seed = load_seed()
    joint = model in JOINT
    ref = fit(seed, model, joint=joint, loo=False, forward=False)
    x = np.arange(1.0, 65.0)
    spec = get_model(model)
    for f in SCALES:
        d = seed.assign(iops=seed["iops"] * f)
        res = fit(d, model, joint=joint, loo=False, forward=False)
        assert res.r2 == pytest.approx(ref.r2, rel=1e-6, abs=1e-9)
        for s, e in res.series.items():
            # every parameter is the IOPS fit's, moved by its unit
            for p, v in e["params"].items():
                want = ref.series[s]["params"][p] * unit_factor(spec.param(p).unit, f)
                assert v == pytest.approx(want, rel=1e-4, abs=1e-12), (s, p)
            mine = spec(x, **e["params"]) / f
            theirs = spec(x, **ref.series[s]["params"])
            np.testing.assert_allclose(mine, theirs, rtol=1e-4)
            assert e["peak_x"] == ref.series[s]["peak_x"]
        bounds = lambda r: sorted(w.split(" is at a bound")[0] for w in r.warnings  # noqa: E731
                                  if "at a bound" in w)
        assert bounds(res) == bounds(ref)
        assert any(f"data scale {f:g}" in w for w in res.warnings)
    assert not any("data scale" in w for w in ref.warnings)


def test_the_data_scale_is_a_power_of_ten_near_the_iops_defaults():
    assert data_scale(np.array([57e3, 95e3, 63e3])) == 1.0
    assert data_scale(np.array([1.0, 6.0, 12.0])) == pytest.approx(1e-4)
    assert data_scale(np.array([2e7, 9e7])) == pytest.approx(1e3)


@pytest.mark.parametrize("factor,axis", [(1e-4, "cores"), (1e3, "threads")])
@pytest.mark.parametrize("model", MODELS)
def test_synthetic_data_in_other_units_recovered_within_intervals(model, factor, axis):
    table = synthetic(model, 0.02, 1)
    table = table.assign(iops=table["iops"] * factor).rename(columns={"jobs": axis})
    res = fit(table, model, x="jobs", joint=model in JOINT, bootstrap=200, seed=1,
              level=0.99, loo=False, forward=False)
    assert res.x == axis
    truth = scaled_truth(model, factor)
    for e in res.series.values():
        for p in e["free"]:
            lo, hi = e["ci"][p]
            assert lo <= truth[p] <= hi, (p, lo, truth[p], hi)


#: The ticket lock's sharp collapse (Boyd-Wickizer et al. 2012, figs. 2-3 shape): a speed-up
#: that climbs to ~18 at 24 cores and halves by 28.
COLLAPSE = {"think": 100.0, "serial": 2.0, "handoff": 1.0}
CORES = np.array([1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48.0])


def collapse_table(noise, factor):
    y = get_model("ticket")(CORES, **COLLAPSE, cap=48.0)
    rng = np.random.default_rng(7)
    y = y * factor * (1.0 + noise * rng.standard_normal(CORES.size))
    return pd.DataFrame({"cores": CORES, "speedup": y})


def test_ticket_collapse_is_sharp():
    y = get_model("ticket")(CORES, **COLLAPSE, cap=48.0)
    assert (y[1:] / y[:-1]).min() < 0.6          # throughput halves between two counts
    assert 16 <= CORES[np.argmax(y)] <= 28


@pytest.mark.parametrize("factor", (1e-4, 1.0, 1e3))
def test_ticket_sharp_collapse_recovered_in_any_unit(factor):
    table = collapse_table(0.02, factor).rename(columns={"speedup": "iops"})
    res = fit(table, "ticket", bootstrap=300, seed=2, level=0.99, loo=False, forward=False)
    assert any("no 'vcpus' column" in w for w in res.warnings)
    e = res.series["all"]
    assert e["params"]["cap"] == 48.0
    assert e["r2"] > 0.99
    assert not any("at a bound" in w for w in res.warnings)
    for p, v in COLLAPSE.items():
        want = v / factor
        lo, hi = e["ci"][p]
        assert lo <= want <= hi, (p, lo, want, hi)
    assert e["peak_x"] in (20.0, 21.0, 22.0, 23.0, 24.0)


def test_cli_fits_a_speedup_table_over_cores(tmp_path, capsys):
    path = tmp_path / "speedup.csv"
    collapse_table(0.0, 1.0 / 9756.0).to_csv(path, index=False)
    assert main(["fit", str(path), "--model", "ticket", "--bootstrap", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["x"] == "cores"
    assert out["r2"] == pytest.approx(1.0, abs=1e-6)
    think = out["series"]["all"]["params"]["think"]
    assert think == pytest.approx(100.0 * 9756.0, rel=1e-3)
    assert any("data scale" in w for w in out["warnings"])
