"""The committed calibration's checks and the predictions made from it."""

import json

import pandas as pd

from xbq.engines.des.params import DesParams, describe, load_params
from xbq.study.calibration import report
from xbq.study.paths import data_dir
from xbq.study.predictions import VARIANTS, predict_rings

CALIBRATED = data_dir() / "calibrated" / "des-params.json"


def test_committed_calibration_is_physical_with_intervals_and_a_forward_test():
    d = json.loads(CALIBRATED.read_text())
    bounds = {p["name"]: (p["min"], p["max"]) for p in describe()}
    assert d["params"]["tag_wait"] == 1.0
    for f in d["fitted"]:
        lo, hi = bounds[f["name"]]
        assert lo < f["value"] < hi and not f["at_bound"], f["name"]
        iv = d["intervals"]["params"][f["name"]]
        assert iv["min"] <= f["value"] <= iv["max"] and len(iv["refits"]) == 4
    assert d["params"]["ctx_switch_ns"] <= 10000.0  # no thread switch costs more
    fw = d["forward"]
    assert {p["jobs"] for p in fw["points"]} == {32, 64}
    assert len(fw["xenblk"]) == len(fw["points"])
    text = report(d)
    assert "forward test" in text and "xen-blk model" in text
    DesParams(**d["params"])  # loads as a valid parameter set


def test_predictions_per_ring_pools_equal_with_one_ring_and_win_with_many():
    p = load_params(CALIBRATED)
    df = predict_rings(p, rings=(1, 16), duration=0.005,
                       variants=["shared pools (RFC)", "per-ring pools"])
    wide = df.pivot(index="queues", columns="variant", values="iops")
    assert wide.loc[1, "per-ring pools"] == wide.loc[1, "shared pools (RFC)"]
    assert wide.loc[16, "per-ring pools"] > 2 * wide.loc[16, "shared pools (RFC)"]


def test_committed_predictions_name_their_command_and_commit():
    out = data_dir() / "predictions"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["command"].startswith("python -m xbq.study.predictions")
    assert prov["commit"] and not prov["commit"].endswith("-dirty")
    df = pd.read_csv(out / "rings-16jobs.csv")
    assert set(df["variant"]) == set(VARIANTS)
    assert sorted(df["queues"].unique()) == [1, 2, 4, 8, 16]
    assert (df["jobs"] == 16).all()
