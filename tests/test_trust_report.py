"""The referee's checks as tables (xbq.study.trust_report) and the committed checks file."""

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

from xbq.errors import XbqError
from xbq.study import trust_report as T
from xbq.study.paths import data_dir

matplotlib.use("Agg")
CHECKS = data_dir() / "calibrated" / "trust.json"


def test_a_checks_file_missing_a_step_is_one_line(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"identify_all": {}}))
    with pytest.raises(XbqError, match="lacks step.*calibration.*rerun"):
        T.load(p)
    with pytest.raises(XbqError, match="cannot read"):
        T.load(tmp_path / "none.json")


def test_seed_summary_counts_what_the_per_seed_rows_say():
    runs = [{"seed": s, "within_10pct": w, "max_abs": m, "median_abs": 0.03}
            for s, w, m in ((11, 12, 0.09), (12, 11, 0.16), (13, 12, 0.08))]
    section = {"calibrations": {"a": runs, "b": runs[:1]}}
    df = T.per_seed(section)
    assert len(df) == 4
    s = T.seed_summary(section)
    assert s.loc["a", "seeds"] == 3 and s.loc["a", "seeds with 12/12"] == 2
    assert s.loc["a", "within 10 % (min-max)"] == "11-12"
    assert s.loc["a", "max |error| (worst seed)"] == pytest.approx(0.16)
    assert s.loc["b", "seeds with 12/12"] == 1


def test_identifiability_marks_fitted_and_fixed_costs():
    section = {"at_5pct": {"se_efolds": {"a_ns": 0.2, "b_ns": 3.0},
                           "selected_se_efolds": {"a_ns": 0.1}}}
    df = T.identifiability(section, {"a_ns": 100.0, "b_ns": 5.0}, {"b_ns": 2000.0})
    assert df.loc["a_ns", "determined calibration"] == "fitted"
    assert "2000" in df.loc["b_ns", "determined calibration"]
    assert np.isnan(df.loc["b_ns", "SE, determined set (e-folds)"])


@pytest.mark.skipif(not CHECKS.exists(), reason="no committed checks")
def test_the_committed_checks_are_whole_and_consistent():
    data = T.load(CHECKS)
    ident = data["identify_all"]["at_5pct"]
    # the determined calibration fits exactly the costs the analysis selected
    assert data["calibration"]["fitted"] == ident["selected"]
    assert set(data["calibration"]["fixed_at_documented_default"]).isdisjoint(ident["selected"])
    # the unseen seeds are not the calibration's
    assert not set(data["seeds"]["unseen_seeds"]) & set(data["identify_all"]["seeds"])
    # the analysis recomputed from the stored Jacobian says what the file says
    from xbq.study import identify

    again = identify.analyse(np.array(data["identify_all"]["J"]), data["identify_all"]["names"],
                             sigma=0.05)
    assert again["selected"] == ident["selected"]
    assert again["se_efolds"] == pytest.approx(ident["se_efolds"], rel=1e-9)
    # every point left out once, and the twin's per-seed rows are the twelve points
    loo = T.loo(data["loo"])
    assert len(loo) == 12 and set(zip(loo["series"], loo["jobs"], strict=True)) == set(
        (p["series"], p["jobs"]) for p in data["calibration"]["points"])
    assert all(len(r["rel_error"]) == 12 for runs in data["seeds"]["calibrations"].values()
               for r in runs)
    # a calibration with vcpu_wake_ns off is not charged for switching it on
    sel = {r["model"]: r for r in data["selection"]["rows"] if "error" not in r}
    det = next(r for m, r in sel.items() if "determined" in m)
    assert "vcpu_wake_ns on" not in det["choices_made"]


def test_plot_twin_native_draws_one_panel_per_sweep():
    from xbq.study.plots import plot_twin_native

    rows = [{"source": src, "mode": m, "jobs": j, "iops_mean": 1e5 * j, "iops_min": 0.9e5 * j,
             "iops_max": 1.1e5 * j, "twin_iops": 1.05e5 * j}
            for src in ("a", "b", "c") for m in ("sq", "mq") for j in (1, 4, 16)]
    fig = plot_twin_native(pd.DataFrame(rows))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3
    assert visible[0].get_xlabel() == "fio jobs" and "IOPS" in visible[0].get_ylabel()


def test_every_figure_names_a_series_the_same_way_and_stays_readable():
    from xbq.study.plots import plot_iops

    native = pd.DataFrame([dict(mode=m, jobs=j, iops=1e5 * j) for m in ("sq", "mq")
                           for j in (1, 4)])
    seed = native.rename(columns={"mode": "series"}).replace(
        {"series": {"sq": "single_ring", "mq": "multi_ring"}})
    fig = plot_iops({"a": seed, "b": native, "c": native})
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 3 and len(fig.axes) == 4  # two a row
    for ax in shown:
        labels = {t.get_text() for t in ax.get_legend().get_texts()}
        assert labels == {"single_ring", "multi_ring"}
        assert ax.get_xlabel() == "fio jobs" and ax.get_ylabel() == "IOPS (thousands)"
    assert fig.get_size_inches()[0] <= 10.5
