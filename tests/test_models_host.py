"""The guest-on-host model: its thread and wake-up counts, its limits, and its fit to the
native engine's own 2-core sweep."""

import numpy as np
import pytest

from xbq.errors import XbqError
from xbq.models.host import busy_threads, guest_host, wakeups
from xbq.models.registry import get_model

N = np.array([1, 2, 4, 8, 16, 32, 64], float)


def test_busy_threads_are_the_engines():
    """64 jobs on 4 vCPUs with 4 rings and 2 dom0 vCPUs: the engine runs 4 + 2 threads."""
    a, r = busy_threads(64.0, 4.0, 4.0, 2.0)
    assert (a, r) == (6.0, 4.0)
    a, r = busy_threads(N, 16.0, 16.0, 16.0)  # a ring per vCPU: one dom0 vCPU per ring
    np.testing.assert_array_equal(a, 2 * np.minimum(N, 16))
    a, r = busy_threads(N, 16.0, 1.0, 16.0)  # one ring
    np.testing.assert_array_equal(a, np.minimum(N, 16) + 1)
    a, r = busy_threads(np.array([1.0, 4.0, 5.0, 16.0]), 16.0, 4.0, 16.0)  # 4 vCPUs a ring
    np.testing.assert_array_equal(r, [1, 1, 2, 4])


def test_wakeups_are_remote_completions_plus_tag_sleeps():
    # one ring, jobs on n vCPUs: (n - 1) / n of the completions wake a job elsewhere; past
    # the ring's 32 tags each job sleeps once per round of them
    w = wakeups(N, 16.0, 1.0, 32.0, 32.0)
    remote = 1 - 1 / np.minimum(N, 16)
    sleeps = np.where(N > 1, np.minimum(1, N / 32), 0)
    np.testing.assert_allclose(w, remote + sleeps)
    # a ring per vCPU, jobs within the tags: nothing to wake
    np.testing.assert_allclose(wakeups(np.array([1.0, 8.0, 16.0]), 16.0, 16.0, 32.0, 32.0), 0)
    # fewer I/Os in flight than tags: no sleeps
    np.testing.assert_allclose(wakeups(np.array([4.0]), 16.0, 1.0, 32.0, 8.0), 0.75)


def test_with_a_cpu_per_thread_it_is_the_pipeline():
    """Enough host CPUs: no sharing, no scheduling work; each ring is bounded by its
    interrupt vCPU, and the rings add up."""
    x = guest_host(N, t_cpu=1.0, t_sched=5.0, t_irq=0.5, t_wake=0.0, host_cpus=1e4,
                   vcpus=16, queues=16)
    want = np.minimum(2 * np.minimum(N, 16) / 1.0, np.minimum(N, 16) / 0.5) * 1e6
    np.testing.assert_allclose(x, want)


def test_sharing_two_host_cpus_amortises_the_scheduling_work():
    """A ring per vCPU on 2 host CPUs: 2 busy threads at one job (no sharing), then the host
    bound 2 / (t_cpu + t_sched * 2 / A), rising with the busy threads A = 2N."""
    x = guest_host(N[:5], t_cpu=1.2, t_sched=2.3, t_irq=0.5, t_wake=1.2, host_cpus=2,
                   vcpus=16, queues=16)
    a = 2 * N[:5]
    want = np.where(a > 2, 2 / (1.2 + 2.3 * 2 / a), 2 / 1.2) * 1e6
    np.testing.assert_allclose(x, want)
    assert x[1] < x[0] and np.all(np.diff(x[1:]) > 0)  # the dip, then the recovery


def test_bad_values_are_one_line_errors():
    with pytest.raises(XbqError, match="t_cpu"):
        guest_host(4, t_cpu=0.0, t_sched=1, t_irq=1, t_wake=1, host_cpus=2, vcpus=2, queues=1)
    with pytest.raises(XbqError, match="t_wake"):
        guest_host(4, t_cpu=1, t_sched=1, t_irq=1, t_wake=-1, host_cpus=2, vcpus=2, queues=1)


def test_registry_takes_the_machine_from_the_rows_columns():
    spec = get_model("host")
    cols = {p.name: p.column for p in spec.params if p.fixed}
    assert cols == {"host_cpus": "host_cpus", "vcpus": "vcpus", "queues": "queues",
                    "dom0_vcpus": None, "ring_size": "nr_ents", "iodepth": "iodepth"}
    assert set(spec.names) - set(cols) == {"t_cpu", "t_sched", "t_irq", "t_wake"}


def _fit_means(path):
    """Fit ``host`` with the kit's fitting engine to the means of the repetitions."""
    import pandas as pd

    from xbq.fit import fit

    d = pd.read_csv(path)
    keep = ["vcpus", "queues", "host_cpus", "nr_ents", "iodepth"]
    means = (d.groupby(["mode", "jobs"], as_index=False)
             .agg(iops=("iops", "mean"), **{c: (c, "first") for c in keep})
             .rename(columns={"mode": "series"}))
    res = fit(means, "host", loo=False, forward=False)
    return {s: e["r2"] for s, e in res.series.items()}


def test_it_explains_the_kits_own_2_core_sweeps():
    """The claim of docs/native.md on the committed 2-core sweeps (means of the repetitions,
    relative errors): R² >= 0.95 on 7 of the 8 series, and the one it misses (16 rings on
    16 vCPUs with the ticket lock, still rising past 16 jobs) above 0.8. A model that lost a
    term misses several."""
    from xbq.study.paths import data_dir

    r2 = {}
    for lock in ("ticket", "pv"):
        for v in (16, 2):
            got = _fit_means(data_dir() / "measured" / f"guest-2core-{lock}-v{v}.csv")
            assert set(got) == {"sq", "mq"}
            r2.update({(lock, v, s): r for s, r in got.items()})
    assert sum(r >= 0.95 for r in r2.values()) >= 7, r2
    assert min(r2.values()) > 0.8, r2
