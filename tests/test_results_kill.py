"""An interrupted sweep loses nothing: ``xbq simulate --out`` killed with SIGKILL, resumed."""

import io
import os
import signal
import subprocess
import sys
import time

import pandas as pd

JOBS = "1,2,3,4,5,6,7,8,9,10,11,12"


def _sweep(out):
    return [sys.executable, "-m", "xbq", "simulate", "--mode", "mq", "--queues", "4",
            "--vcpus", "4", "--iodepth", "8", "--jobs", JOBS, "--duration", "0.05",
            "--seed", "3", "--json", "--out", str(out)]


def _rows(path):
    if not path.exists():
        return 0
    return max(path.read_bytes().count(b"\n") - 1, 0)


def test_sigkill_mid_sweep_then_resume_keeps_every_point_once(tmp_path):
    out = tmp_path / "sweep.csv"
    env = dict(os.environ)
    proc = subprocess.Popen(_sweep(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    deadline = time.monotonic() + 600
    while _rows(out) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = out.read_bytes()
    kept = kept[:kept.rfind(b"\n") + 1]  # whole lines survive the kill
    before = pd.read_csv(io.BytesIO(kept))
    done = subprocess.run(_sweep(out), capture_output=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    after = pd.read_csv(out)
    assert sorted(after["jobs"]) == list(range(1, 13))  # every point, exactly once
    assert after["point_key"].is_unique
    assert out.read_bytes().startswith(kept)  # what was stored before the kill is untouched
    assert len(before) >= 2
    merged = before.merge(after, on="point_key", suffixes=("_a", "_b"))
    assert len(merged) == len(before)
    assert (merged["iops_a"] == merged["iops_b"]).all()
