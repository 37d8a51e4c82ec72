"""Benchmark (``make bench``): cold compile of every kernel ``make reproduce`` uses.

A child process with an empty numba cache calls each part of the study once with as little
work as possible: the handshake and the protocol loopback, every model's kernels (one fit of
each), the discrete-event twin (sq and mq) and the native engine (sq and mq). It reports the
wall time of each part and the child's peak resident memory. Reported, never asserted (the
issue's targets on 2 cores: at most 60 s and 1.5 GB in all).
"""

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.benchmark

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, time
t = {}
t0 = time.perf_counter()
from xbq.blkif.loopback import loopback
from xbq.blkif.negotiate import negotiate
t["import"] = time.perf_counter() - t0
t0 = time.perf_counter()
loopback(negotiate(vcpus=2, max_queues=2, sectors=1 << 16), nr_ios=50, device="ramdisk")
t["loopback"] = time.perf_counter() - t0
t0 = time.perf_counter()
from xbq.fit import fit
from xbq.models import MODELS
from xbq.study.datasets import load_seed
seed = load_seed()
for model in MODELS:
    fit(seed, model, bootstrap=0)
t["models"] = time.perf_counter() - t0
t0 = time.perf_counter()
from xbq.engines.des.simulate import simulate
for mode in ("sq", "mq"):
    simulate(mode, 2, queues=2, vcpus=2, iodepth=4, duration=0.0005)
t["twin"] = time.perf_counter() - t0
t0 = time.perf_counter()
from xbq.engines.native import measure
measure(mode=["sq", "mq"], jobs=1, queues=1, vcpus=1, iodepth=4, duration=0.05, warmup=0.0)
t["native"] = time.perf_counter() - t0
print(json.dumps(t))
"""


def test_bench_cold_compile(tmp_path, capsys):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("NUMBA_BOUNDSCHECK", None)  # make reproduce runs without bounds checking
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-2000:]
    parts = json.loads(out.stdout.strip().splitlines()[-1])
    rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    with capsys.disabled():
        print(f"\ncold compile of every kernel make reproduce uses: {wall:.1f} s wall, "
              f"peak RSS {rss_gb:.2f} GB (child, {os.cpu_count()} CPUs)")
        for name, sec in parts.items():
            print(f"  {name:<9} {sec:6.1f} s")
