"""Today's code reproduces the golden outputs recorded before the state redesign.

``tests/golden/record.py`` wrote them; see its docstring. Discrete-event frames and the
loopback and handshake outputs must match exactly (the frames as text at 17 significant
digits, i.e. bit for bit); fitted numbers within 1e-7 relative, since numpy's linear algebra
may round differently on another CPU (a bootstrap interval of the USL fit differed by 3.5e-9
on a 2-vCPU EPYC VM, with the code of commit 3011f88 as well).
"""

import io
import json
import math
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))
import record  # noqa: E402

#: Frame columns added since the golden outputs were recorded (zero in every golden run).
NEW_COLUMNS = ("tag_wait_per_req", "iops_se", "placement_left_out")


def test_des_frames_bit_for_bit():
    """Every column bit for bit, except ``point_key``: it hashes every parameter, so the
    parameters added since (``vcpu_wake_ns``, ``tag_wait``, ``be_pools_per_ring``, all off
    here) give new keys to the same runs."""
    import pandas as pd

    frames = record.des_frames()
    for col in NEW_COLUMNS:
        assert (frames[col] == 0).all(), col
    buf = io.StringIO()
    frames.drop(columns=list(NEW_COLUMNS)).to_csv(buf, index=False, float_format="%.17g")
    old = pd.read_csv(GOLDEN / "des.csv", dtype=str, keep_default_na=False)
    new = pd.read_csv(io.StringIO(buf.getvalue()), dtype=str, keep_default_na=False)
    assert list(new.columns) == list(old.columns), "columns differ"
    keep = [c for c in old.columns if c != "point_key"]
    want = old[keep].to_csv(index=False).splitlines()
    got = new[keep].to_csv(index=False).splitlines()
    assert got[0] == want[0], "columns differ"
    bad = [(w.split(",")[-1], i) for i, (g, w) in enumerate(zip(got, want, strict=True))
           if g != w]
    assert not bad, f"frames differ for {bad[:5]}"


#: Counters added since the golden outputs were recorded (each zero in every golden run).
NEW_COUNTERS = {"back": {"map_errors"}}


def test_loopback_outputs():
    """Equal, except the backend's new ``map_errors`` counter (grant maps that failed: the
    old code folded them into the error responses; the golden runs have none)."""
    want = json.loads((GOLDEN / "loopback.json").read_text())
    got = json.loads(json.dumps(record.loopbacks(), sort_keys=True))
    assert got.keys() == want.keys()
    for name, run in got.items():
        for side, new in NEW_COUNTERS.items():
            assert all(run[side].pop(k) == 0 for k in new), (name, side)
    assert got == want


def test_handshake_outputs():
    want = json.loads((GOLDEN / "negotiate.json").read_text())
    assert json.loads(json.dumps(record.handshakes(), sort_keys=True)) == want


def _close(a, b, path="fit"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-7, abs=1e-12), \
            path
    else:
        assert a == b, path


def test_fit_outputs():
    want = json.loads((GOLDEN / "fit.json").read_text())
    _close(json.loads(json.dumps(record.fits(), sort_keys=True)), want)
