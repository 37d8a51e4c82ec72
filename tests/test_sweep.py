"""Sweeps on Dask distributed: the frame equals the serial run's, a killed sweep resumes with
every point exactly once, a worker killed mid-sweep loses and duplicates nothing, failures
are recorded, replications summarised, and the calibration is the same on the cluster."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from xbq.engines.schema import COLUMNS
from xbq.errors import XbqError
from xbq.sweep import load_spec, mapper, run, spec_from_dict, summarize

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"engine": "des", "seeds": 2, "params": str(ROOT / "data/calibrated/des-params.json"),
        "fixed": {"duration": 0.002, "vcpus": 4, "queues": 4, "iodepth": 8},
        "axes": {"mode": ["sq", "mq"], "jobs": [1, 4], "lock_mcs": [0, 1]}}


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=50)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def serial():
    return run(spec_from_dict(SPEC), serial=True)


def _write(tmp_path, spec, name="s.json"):
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("change, match", [
    ({"engine": "gpu"}, "engine must be 'des' or 'native'"),
    ({"sweeps": 3}, "unknown setting 'sweeps'"),
    ({"axes": {"jobz": [1]}}, "'jobz' is not a setting of the des engine"),
    ({"axes": {"jobs": 4}}, "axes.jobs must be a list"),
    ({"axes": {"jobs": []}}, "axes.jobs must hold at least 1 item(s), not 0"),
    ({"axes": {"submit_ns": ["fast"]}}, "submit_ns[0] must be a number, not 'fast'"),
    ({"seeds": 0}, "seeds must be between 1 and 1000, not 0"),
    ({"fixed": {"jobs": 1}, "axes": {"jobs": [1, 2]}}, "both fixed and an axis"),
    ({"seeds": 1, "axes": {"jobs": list(range(1, 401)), "seed": list(range(400))}},
     "exceed the limit"),
    ({"axes": {"seed": [1, 2]}}, "seeds = 2 beside a seed axis"),
    ({"axes": {"jobs": [1, 1.0]}}, "jobs lists 1 more than once"),
    ({"params": "/nonexistent/costs.json"}, "cannot read"),
])
def test_bad_sweeps_get_one_line(change, match):
    with pytest.raises(XbqError, match=re.escape(match)) as err:
        spec_from_dict({**SPEC, **change})
    assert "\n" not in str(err.value)


def test_bad_files_and_cli(tmp_path, capsys):
    from xbq.cli import main

    bad = tmp_path / "s.toml"
    bad.write_text("engine = des\n")
    with pytest.raises(XbqError, match="not valid TOML"):
        load_spec(bad)
    assert main(["sweep", str(bad)]) == 1
    assert capsys.readouterr().err.startswith("xbq sweep: error:")
    with pytest.raises(XbqError, match="cannot read"):
        load_spec(tmp_path / "missing.toml")


def test_points_cross_the_axes_with_stable_keys():
    spec = spec_from_dict(SPEC)
    pts = spec.points()
    assert len(pts) == 2 * 2 * 2 * 2
    assert len({p.key for p in pts}) == len(pts)
    assert [p.key for p in spec_from_dict(SPEC).points()] == [p.key for p in pts]
    other = spec_from_dict({**SPEC, "fixed": {**SPEC["fixed"], "iodepth": 16}}).points()
    assert not {p.key for p in other} & {p.key for p in pts}
    assert [(p.point.seed, p.point.rep) for p in pts[:2]] == [(1, 0), (2, 1)]
    # a point's key is its engine's: the sweep adds no recipe of its own
    from xbq.engines.des.params import load_params
    from xbq.engines.des.point import DesPoint

    first = pts[0].point
    assert first == DesPoint(mode="sq", jobs=1, queues=4, vcpus=4, iodepth=8, duration_s=0.002,
                             seed=1, params=load_params(SPEC["params"]).replace(lock_mcs=0))
    assert pts[0].labels == {"mode": "sq", "jobs": 1, "lock_mcs": False}


def test_toml_relative_params_resolve_to_the_checkout(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('engine = "des"\nparams = "data/calibrated/des-params.json"\n'
                    "[axes]\njobs = [1]\n")
    assert Path(load_spec(path).params).is_file()


def test_local_cluster_frame_equals_the_serial_run(client, serial, tmp_path):
    frame = run(spec_from_dict(SPEC), client=client, out=tmp_path / "r.csv")
    assert frame["point_key"].tolist() == serial["point_key"].tolist()
    for col in COLUMNS:
        if col in ("duration_s",) or serial[col].dtype == object:
            assert frame[col].tolist() == serial[col].tolist(), col
        else:
            np.testing.assert_array_equal(frame[col].to_numpy(), serial[col].to_numpy(), col)
    stored = pd.read_csv(tmp_path / "r.csv")
    assert sorted(stored["point_key"]) == sorted(serial["point_key"])


def test_a_worker_killed_mid_sweep_loses_and_duplicates_nothing(client, serial, tmp_path):
    pids = list(client.run(os.getpid).values())
    killed = []

    def progress(row):
        if not killed:  # after the first point: kill one worker process outright
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    spec = spec_from_dict({**SPEC, "fixed": {**SPEC["fixed"], "duration": 0.004}})
    out = tmp_path / "r.csv"
    frame = run(spec, client=client, out=out, progress=progress)
    assert killed
    stored = pd.read_csv(out)
    assert stored["point_key"].is_unique and len(stored) == len(spec.points())
    assert "error" not in frame or frame["error"].isna().all()
    again = run(spec, serial=True)
    np.testing.assert_array_equal(frame["iops"].to_numpy(), again["iops"].to_numpy())


def test_a_killed_sweep_resumes_with_every_point_once(tmp_path, serial):
    spec = dict(SPEC, fixed={**SPEC["fixed"], "duration": 0.02}, seeds=3)
    path = _write(tmp_path, spec)
    out = tmp_path / "r.csv"
    cmd = [sys.executable, "-m", "xbq", "sweep", str(path), "--workers", "2", "--out",
           str(out), "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_text().splitlines()) >= 5:  # header + 4 points
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the client, its scheduler and its workers
    proc.wait()
    first = pd.read_csv(out)
    total = len(spec_from_dict(spec).points())
    assert 4 <= len(first) < total, "the sweep was not killed mid-way"
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    stored = pd.read_csv(out)
    assert stored["point_key"].is_unique and len(stored) == total
    want = run(spec_from_dict(spec), serial=True)
    got = stored.set_index("point_key").loc[want["point_key"]]
    np.testing.assert_array_equal(got["iops"].to_numpy(), want["iops"].to_numpy())


def test_a_failing_point_is_recorded_and_retried(tmp_path, capsys, monkeypatch):
    """A point that fails when it runs (here: the engine raises for 2 jobs) is stored with its
    error, the sweep goes on, and the next run tries it again."""
    import xbq.engines.des.simulate as des
    from xbq.cli import main

    real = des.simulate_point

    def flaky(point, **kw):
        if point.jobs == 2:
            raise XbqError("injected failure")
        return real(point, **kw)

    monkeypatch.setattr(des, "simulate_point", flaky)
    spec = dict(SPEC, seeds=1, fixed={"duration": 0.002, "vcpus": 4, "queues": 4},
                axes={"jobs": [1, 2], "iodepth": [8, 16]})
    path = _write(tmp_path, spec)
    out = tmp_path / "r.csv"
    assert main(["sweep", str(path), "--serial", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "4 point(s), 2 failed" in captured.out, captured.err
    stored = pd.read_csv(out)
    bad = stored[stored["error"].notna()]
    assert len(bad) == 2 and bad["error"].str.contains("injected failure").all()
    assert (bad["jobs"] == 2).all() and bad["point_key"].notna().all()
    frame = run(spec_from_dict(spec), serial=True, out=out)  # the failures run again
    assert len(pd.read_csv(out)) == 6 and frame["error"].notna().sum() == 2


def test_replications_pool_into_a_t_interval(serial):
    s = summarize(serial, ["mode", "jobs", "lock_mcs"])
    assert len(s) == 8 and (s["n"] == 2).all() and (s["failed"] == 0).all()
    g = serial[(serial["mode"] == "mq") & (serial["jobs"] == 4) & (serial["lock_mcs"] == 0)]
    row = s[(s["mode"] == "mq") & (s["jobs"] == 4) & (s["lock_mcs"] == 0)].iloc[0]
    v = g["iops"].to_numpy(float)
    half = stats.t.ppf(0.975, 1) * v.std(ddof=1) / np.sqrt(2)
    assert row["iops_mean"] == pytest.approx(v.mean())
    assert row["iops_ci_hi"] - row["iops_ci_lo"] == pytest.approx(2 * half)


def test_native_points_take_the_per_host_lock_on_a_worker(client):
    from xbq.sweep.tasks import _native_lock

    assert type(_native_lock()).__name__ == "nullcontext"  # not in a worker
    assert client.submit(lambda: type(_native_lock()).__name__, pure=False).result() == "Lock"


def test_calibration_on_the_cluster_equals_the_serial_run(client):
    from xbq.study.calibrate import calibrate
    from xbq.study.datasets import load_seed

    kw = dict(fit=("submit_ns",), machines=[{"pcpus": 0.0}, {"pcpus": 20.0},
                                            {"pcpus": 0.0, "dom0_vcpus": 8.0}],
              fit_requests=300, max_nfev=2, final_requests=400)
    a = calibrate(load_seed(), **kw).to_dict()
    b = calibrate(load_seed(), mapper=mapper(client), **kw).to_dict()
    for k in ("params", "points", "machine", "median_rel_error", "max_rel_error"):
        assert a[k] == b[k], k
    assert [m["cost"] for m in a["machines"]] == [m["cost"] for m in b["machines"]]
