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
    moved = 0
    for f in d["fitted"]:
        lo, hi = bounds[f["name"]]
        assert lo < f["value"] < hi and not f["at_bound"], f["name"]
        refits = d["intervals"]["params"][f["name"]]["refits"]
        assert len(refits) == len(d["intervals"]["seeds"]) == 4
        assert all(lo <= r <= hi for r in refits), f["name"]  # refits stay physical
        moved += any(r != f["value"] for r in refits)
    assert moved == len(d["fitted"])  # every cost was refitted on the other seeds
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


def test_calibration_checks_refit_other_seeds_and_predict_the_held_out_points():
    from concurrent.futures import ThreadPoolExecutor

    from xbq.study.calibration import forward_test, pool_mapper, seed_intervals
    from xbq.study.datasets import load_seed

    d = json.loads(CALIBRATED.read_text())
    # the committed setting, cut down: short runs, 2 placements, one step of the optimiser
    d["fit"].update(fit_requests=300, final_placements=2)
    d["params"]["placements"] = 2.0
    d["machine"] = {**d["machine"], "placements": 2.0}
    table = load_seed()
    with ThreadPoolExecutor(2) as pool:
        iv = seed_intervals(table, d, seeds=(2, 3), max_nfev=1, mapper=pool_mapper(pool))
    serial = seed_intervals(table, d, seeds=(2, 3), max_nfev=1)
    assert iv == serial  # the refits land in their seeds' places whatever order they finish
    assert iv["seeds"] == [2, 3]
    assert all(len(iv["params"][f["name"]]["refits"]) == 2 for f in d["fitted"])
    fw = forward_test(table, d, max_nfev=1, final_requests=300, xenblk=False)
    held_out = table[table["jobs"] > 16]
    assert [(p["series"], p["jobs"], p["measured"]) for p in fw["points"]] == list(
        zip(held_out["series"], held_out["jobs"], held_out["iops"].astype(float),
            strict=True))  # the held-out points are the table's, in its order
    assert all(0 < p["predicted"] < 1e7 for p in fw["points"])
    assert set(fw["train"]) == {f["name"] for f in d["fitted"]}
