"""The native engine end to end: real threads, both modes, exactly once, data, watchdog."""

import json

import numpy as np
import pytest

from xbq.blkif.blk_mq import blk_mq_map_queues
from xbq.engines.native import loops as K
from xbq.engines.native import measure
from xbq.engines.native.locks import LOCK_KINDS, spin_lock
from xbq.engines.native.runner import (
    NativeConfig,
    _check_disk,
    _compile,
    _Point,
    _run_threads,
    run_point,
)
from xbq.engines.schema import COLUMNS
from xbq.errors import XbqError
from xbq.study.results import ResultsStore

pytestmark = pytest.mark.threads
SHORT = {"duration_s": 0.3, "warmup_s": 0.05, "stall_s": 5.0}


def _assert_exactly_once(row):
    """(``lost`` and ``duplicated`` need no check: a run with either raises.)"""
    assert row["submitted"] == row["completed"] > 0
    assert row["iops"] > 0 and row["read_iops"] + row["write_iops"] == pytest.approx(row["iops"])


def test_blk_mq_default_map_is_contiguous_blocks():
    qmap = blk_mq_map_queues(16, 4)
    assert qmap.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert blk_mq_map_queues(4, 4).tolist() == [0, 1, 2, 3]
    assert sorted(set(blk_mq_map_queues(7, 3).tolist())) == [0, 1, 2]


def test_sq_ramdisk_exactly_once_and_data():
    row = run_point(NativeConfig(mode="sq", jobs=3, vcpus=4, iodepth=8, device="ramdisk",
                                 lock="ticket", **SHORT))
    _assert_exactly_once(row)
    assert row["queues"] == 1 and row["data_verified"] and row["engine"] == "native"
    assert row["lock_acquired"] > 0 and row["write_iops"] > 0


@pytest.mark.parametrize("lock", ["mcs", "ttas"])
def test_mq_ramdisk_exactly_once_and_data(lock):
    row = run_point(NativeConfig(mode="mq", jobs=4, vcpus=4, queues=2, iodepth=8,
                                 device="ramdisk", lock=lock, **SHORT))
    _assert_exactly_once(row)
    assert row["queues"] == 2 and row["data_verified"]


def test_split_requests_are_verified_too():
    """1 MiB I/Os exceed max_sectors (256) and go out as 8 driver requests each."""
    row = run_point(NativeConfig(mode="mq", jobs=2, vcpus=2, queues=2, iodepth=4,
                                 device="ramdisk", bssplit="1m/50:4k/50", rwmixread=50,
                                 **SHORT))
    _assert_exactly_once(row)
    assert row["max_sectors"] == 256 and row["requests"] > row["iops"] * row["duration_s"]


def test_oversubscribed_sq_null_does_not_hang():
    row = run_point(NativeConfig(mode="sq", jobs=16, vcpus=16, iodepth=4, lock="ticket",
                                 **SHORT))
    _assert_exactly_once(row)
    assert row["lock_acquired"] > 0 and row["threads"] == 17


def test_watchdog_names_a_stalled_backend():
    cfg = NativeConfig(mode="mq", jobs=2, vcpus=2, queues=2, iodepth=4, duration_s=5.0,
                       warmup_s=0.0, stall_s=0.4, stall_ring=1, stall_after=20)
    with pytest.raises(XbqError) as err:
        run_point(cfg)
    msg = str(err.value)
    assert "watchdog" in msg and "ring 1 (1.xvda-1) on dom0 vCPU 1" in msg
    assert "req_prod=" in msg and "req_cons=" in msg and "rsp_prod=" in msg
    assert "\n" not in msg


def test_lock_timeout_becomes_a_clear_error():
    cfg = NativeConfig(mode="sq", jobs=2, vcpus=2, iodepth=2, lock_timeout_s=0.2, **SHORT)
    pt = _Point(cfg)
    _compile(pt)
    kind = LOCK_KINDS[cfg.lock]
    assert spin_lock(pt.run.locks, 0, kind, pt.run.mcs, 0, 10**9) == 0  # held forever
    with pytest.raises(XbqError, match="gave up waiting for the ticket lock of ring 0"):
        _run_threads(pt)


def test_disk_check_catches_a_corrupted_sector():
    cfg = NativeConfig(mode="sq", jobs=1, vcpus=1, iodepth=4, device="ramdisk",
                       rwmixread=0, **SHORT)
    pt = _Point(cfg)
    _compile(pt)
    _run_threads(pt)
    _check_disk(pt)  # intact
    s = int(np.flatnonzero(pt.run.wseq != K.WSEQ_NEVER)[0])
    pt.vbd.disk[s * 512 + 100] ^= 0xFF
    with pytest.raises(XbqError, match=f"sector {s} does not hold what was written"):
        _check_disk(pt)


@pytest.mark.parametrize("kwargs, match", [
    ({"jobs": 0}, "jobs must be between 1 and 1024, not 0"),
    ({"jobs": [1, 0]}, "jobs must be between 1 and 1024, not 0"),
    ({"jobs": 5000}, "jobs must be between 1 and 1024, not 5000"),
    ({"iodepth": 0}, "iodepth must be between 1 and 65536"),
    ({"duration": float("inf")}, "duration_s must be finite"),
    ({"warmup": float("nan")}, "warmup_s must be finite"),
    ({"duration": 1e9}, "duration_s must be > 0 and at most 86400"),
    ({"seed": -1}, "seed must be between 0"),
    ({"queues": 2000, "vcpus": 4000}, "queues must be between 1 and 1024"),
    ({"queues": 32, "vcpus": 32}, "32 queues exceed the backend's maximum of 16"),
    ({"queues": 8, "vcpus": 4}, "8 queues exceed the 4 vCPUs"),
    ({"lock": "spin"}, "lock must be 'ticket', 'ttas', 'mcs' or 'pv', not 'spin'"),
    ({"device": "nvme"}, "device must be 'null' or 'ramdisk', not 'nvme'"),
    ({"mode": "xq"}, "mode must be 'sq' or 'mq', not 'xq'"),
    ({"workload": "oltp"}, "unknown workload"),
])
def test_bad_arguments_are_one_line_errors(kwargs, match):
    args = {"mode": "mq", "jobs": 1, "duration": 0.1, "warmup": 0.0}
    args.update(kwargs)
    with pytest.raises(XbqError, match=match) as err:
        measure(**args)
    assert "\n" not in str(err.value)


def test_measure_returns_the_common_schema_and_appends_to_out(tmp_path):
    from xbq.engines.native import measure_point, points
    from xbq.engines.schema import to_frame
    from xbq.study.results import run_points

    out = tmp_path / "m.csv"
    rows = []
    pts = points(mode=["sq", "mq"], jobs=[1, 2], queues=2, vcpus=2, iodepth=4, duration=0.2,
                 warmup=0.05, seed=3)
    with ResultsStore(out, {"engine": "native"}, axes=("mode", "jobs")) as store:
        df = to_frame(run_points(pts, measure_point, store, progress=rows.append))
    assert list(df.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert len(df) == 4 and len(rows) == 4
    assert (df["engine"] == "native").all()
    assert df[["mode", "jobs"]].values.tolist() == [["sq", 1], ["mq", 1], ["sq", 2], ["mq", 2]]
    assert set(df.loc[df["mode"] == "mq", "queues"]) == {2}
    for col in ("lock_contended", "cpu_s", "lat_p99_us", "notify_fe_per_req", "ring_full"):
        assert col in df.columns
    import pandas as pd

    stored = pd.read_csv(out)
    assert len(stored) == 4
    meta = json.loads((tmp_path / "m.csv.meta.json").read_text())
    assert meta["engine"] == "native" and meta["machine"]["logical_cpus"] >= 1
