"""Benchmark (``make bench``): sweeps and calibration, serial against a 2-worker LocalCluster
on this machine, side by side (reported, never asserted).

1. the 12 seed points x 8 seeds (~20k requests a point);
2. a 200-point what-if grid (mode x jobs x lock x ring order x 5 seeds);
3. a calibration over 4 machine settings, serial against parallel.
"""

import time

import pytest

from xbq.study.datasets import load_seed
from xbq.study.paths import data_dir
from xbq.sweep import local_client, mapper, run, spec_from_dict

pytestmark = pytest.mark.benchmark
PARAMS = str(data_dir() / "calibrated" / "des-params.json")


def _seed_spec():
    seed = load_seed()
    # one axis per series (its queue count), jobs over the seed's counts
    return [spec_from_dict({"engine": "des", "seeds": 8, "params": PARAMS,
                            "fixed": {"mode": mode, "queues": q, "duration": 0.1},
                            "axes": {"jobs": sorted(seed.jobs.unique().tolist())}})
            for mode, q in (("sq", 1), ("mq", 16))]


WHATIF = {"engine": "des", "seeds": 5, "params": PARAMS, "fixed": {"duration": 0.02},
          "axes": {"mode": ["sq", "mq"], "jobs": [1, 4, 16, 32, 64], "lock_mcs": [0, 1],
                   "ring_page_order": [0, 2]}}


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def test_bench_sweeps_and_calibration(capsys):
    from xbq.study.calibrate import calibrate

    seed_specs = _seed_spec()
    whatif = spec_from_dict(WHATIF)
    run(seed_specs[0], serial=True)  # compile / load the cache outside the timings
    client = local_client(2)
    try:
        run(whatif, client=client)  # warm the workers' caches
        lines = []
        for name, specs in (("seed sweep, 12 points x 8 seeds", seed_specs),
                            ("what-if grid, 200 points", [whatif])):
            _, ts = _time(lambda specs=specs: [run(s, serial=True) for s in specs])
            _, tp = _time(lambda specs=specs: [run(s, client=client) for s in specs])
            n = sum(len(s.points()) for s in specs)
            lines.append(f"{name}: serial {ts:.1f} s, LocalCluster(2) {tp:.1f} s "
                         f"({n} points): {ts / tp:.2f}x")
        kw = dict(fit=("submit_ns", "fe_cs_ns"),
                  machines=[{"pcpus": 0.0}, {"pcpus": 20.0}, {"pcpus": 0.0, "dom0_vcpus": 8.0},
                            {"pcpus": 20.0, "dom0_vcpus": 8.0}],
                  fit_requests=2000, max_nfev=8, final_requests=20_000)
        a, ts = _time(lambda: calibrate(load_seed(), **kw))
        b, tp = _time(lambda: calibrate(load_seed(), mapper=mapper(client), **kw))
        same = a.values == b.values and a.points == b.points
        lines.append(f"calibration, 4 machine settings: serial {ts:.1f} s, LocalCluster(2) "
                     f"{tp:.1f} s: {ts / tp:.2f}x; identical results: {same}")
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    with capsys.disabled():
        print("\n" + "\n".join(lines))
