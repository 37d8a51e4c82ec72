"""Benchmark (``make bench``): the native engine's IOPS on this machine, against Python threads.

Reported, never asserted (the figures depend on the machine and on what else runs on it):

1. one job on one ring with the null device, three times (target: >= 3M IOPS on 2 cores);
2. ``sq`` against ``mq`` (4 queues, 8 vCPUs) across 1, 2, 4 and 8 jobs;
3. the same pipeline (a job keeping ``iodepth`` I/Os of the IOmeter mix in flight, a backend
   thread answering each one, completions back to the job) built on Python threads and
   ``queue.Queue``, in the same run (the issue expects it at least 20x slower).

Only correctness is asserted: nothing lost or duplicated.
"""

import queue
import random
import threading
import time

import pytest

from xbq.engines.native.runner import NativeConfig, run_point
from xbq.workload.fio import IOMETER_BSSPLIT, IOMETER_RWMIXREAD, parse_bssplit

pytestmark = [pytest.mark.benchmark, pytest.mark.threads]
DURATION_S, WARMUP_S = 2.0, 0.5


def python_queue_pipeline(duration_s=DURATION_S, warmup_s=WARMUP_S, iodepth=32,
                          bssplit=IOMETER_BSSPLIT, rwmixread=IOMETER_RWMIXREAD, seed=0):
    """IOPS of one job and one backend thread talking through two ``queue.Queue``s."""
    sizes, percents = parse_bssplit(bssplit)
    sizes = [int(s) // 512 for s in sizes]
    rng = random.Random(seed)
    ring, completions = queue.Queue(), queue.Queue()
    done = [0]
    stop = threading.Event()
    dev_sectors = 1 << 21

    def backend():  # xen_blkif_schedule: take a request, the null device answers it
        while True:
            req = ring.get()
            if req is None:
                return
            completions.put((req[0], 0))

    def next_io(tag):
        nsect = rng.choices(sizes, weights=percents)[0]
        write = rng.random() >= rwmixread / 100
        sector = rng.randrange(0, dev_sectors - nsect)
        return tag, write, sector, nsect

    def job():
        for tag in range(iodepth):
            ring.put(next_io(tag))
        while not stop.is_set():
            tag, status = completions.get()
            assert status == 0
            done[0] += 1
            ring.put(next_io(tag))

    threads = [threading.Thread(target=backend), threading.Thread(target=job)]
    for t in threads:
        t.start()
    time.sleep(warmup_s)
    c0, t0 = done[0], time.perf_counter()
    time.sleep(duration_s)
    c1, t1 = done[0], time.perf_counter()
    stop.set()
    threads[1].join()
    ring.put(None)
    threads[0].join()
    return (c1 - c0) / (t1 - t0)


def _point(**kw):
    return run_point(NativeConfig(duration_s=DURATION_S, warmup_s=WARMUP_S, **kw))


def test_bench_native(capsys):
    lines = []
    ones, pys = [], []
    for _ in range(3):  # side by side, three times (a shared 2-core VM is noisy)
        ones.append(_point(mode="sq", jobs=1, vcpus=1, iodepth=32))
        pys.append(python_queue_pipeline(iodepth=32))
    for one, py in zip(ones, pys, strict=True):
        lines.append(f"1 job, 1 ring, null device, iodepth 32: {one['iops'] / 1e3:.1f}k IOPS "
                     f"(cpu {one['cpu_util']:.2f} cores, p50 {one['lat_p50_us']:.0f} us); "
                     f"Python threads + queue.Queue, same pipeline: {py / 1e3:.1f}k IOPS "
                     f"-> xbq native is {one['iops'] / py:.1f}x")
    med = sorted(o["iops"] for o in ones)[1]
    lines.append(f"median of three: {med / 1e3:.1f}k IOPS, "
                 f"{sorted(o['iops'] / p for o, p in zip(ones, pys, strict=True))[1]:.1f}x")
    lines.append("jobs  sq kIOPS  mq(4q) kIOPS  sq lock contended  mq lock contended")
    for jobs in (1, 2, 4, 8):
        sq = _point(mode="sq", jobs=jobs, vcpus=8, iodepth=32)
        mq = _point(mode="mq", jobs=jobs, vcpus=8, queues=4, iodepth=32)
        lines.append(f"{jobs:>4}  {sq['iops'] / 1e3:8.1f}  {mq['iops'] / 1e3:12.1f}  "
                     f"{sq['lock_contended_frac']:17.1%}  {mq['lock_contended_frac']:17.1%}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
