"""The mechanistic xen-blk model reduces to the lock models in its limits."""

import numpy as np
import pytest

from xbq.errors import XbqError
from xbq.models import MODELS, get_model, multi_ring, single_ring, ticket
from xbq.models.xenblk import throughput

N = np.array([1, 2, 4, 8, 12, 16])
FREE = dict(t_cpu=7.0, t_ring=8.0, t_shared=1.5, t_handoff=0.3, t_back=0.0, t_dev=0.0)


def test_single_ring_is_one_ticket_lock():
    got = single_ring(N, pcpus=64, vcpus=64, t_wake=5.0, **FREE)
    ref = ticket(N, 7.0, 9.5, 0.3)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_multi_ring_with_a_ring_per_cpu_is_the_shared_lock_only():
    got = multi_ring(N, queues=16, pcpus=64, vcpus=64, **FREE)
    ref = ticket(N, 7.0 + 8.0 + 0.15, 1.5, 0.3)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_jobs_beyond_vcpus_pay_the_wakeup_only_then():
    n = np.array([8, 16, 32, 64])
    flat = single_ring(n, vcpus=16, pcpus=64, t_wake=0.0, **FREE)
    np.testing.assert_allclose(flat[1:], flat[1])
    woke = multi_ring(n, queues=16, vcpus=16, pcpus=64, t_wake=3.0, **FREE)
    none = multi_ring(n, queues=16, vcpus=16, pcpus=64, t_wake=0.0, **FREE)
    np.testing.assert_allclose(woke[:2], none[:2])
    assert woke[2] < none[2] and woke[3] < woke[2]


def test_fewer_pcpus_stretch_cpu_times():
    # with no hand-off cost, n vCPUs on p < n pCPUs is the same model with times * n/p
    p = dict(FREE, t_handoff=0.0)
    got = single_ring(16, vcpus=16, pcpus=8, **p)
    ref = ticket(16, 7.0 * 2, 9.5 * 2, 0.0)
    assert got == pytest.approx(ref, rel=1e-12)


def test_backend_and_ring_slots_are_ceilings():
    p = dict(FREE, t_back=20.0, t_dev=0.0)
    assert single_ring(16, pcpus=64, **p) == pytest.approx(1e6 / 20.0)
    assert multi_ring(16, queues=4, pcpus=64, **p) == pytest.approx(4e6 / 20.0)
    q = dict(FREE, t_back=0.0, t_dev=1000.0)
    assert single_ring(16, pcpus=64, ring_size=8, **q) == pytest.approx(8 / 1000.0 * 1e6)


def test_registry_evaluator_matches_public_function():
    spec = get_model("xenblk")
    vals = dict(FREE, t_wake=2.0, pcpus=13.0, vcpus=16.0, queues=16.0)
    x = np.array([1, 4, 8, 16, 32, 64.0])
    np.testing.assert_allclose(spec(x, **vals),
                               throughput(x.astype(int), **vals), rtol=1e-12)


def test_registry_specs_are_complete():
    assert set(MODELS) == {"amdahl", "usl", "usl-capped", "mva", "repairman", "ticket", "mcs",
                           "xenblk", "host"}
    for spec in MODELS.values():
        for p in spec.params:
            assert p.unit and p.meaning
            assert p.lower <= p.default <= p.upper
        rows = np.array([[p.default for p in spec.params]] * 3)
        out = spec.evaluate(np.array([1.0, 2.0, 8.0]), rows)
        assert out.shape == (3, 3) and np.all(out > 0)


def test_unknown_parameter_is_rejected():
    with pytest.raises(XbqError):
        single_ring(4, t_bogus=1.0)
    with pytest.raises(XbqError):
        get_model("nope")


def test_more_cpus_than_rings_makes_ring_locks_the_queues():
    # 16 CPUs on 4 rings, nothing shared: four independent ticket locks of 4 CPUs each
    p = dict(FREE, t_shared=0.0, t_back=0.0, t_dev=0.0)
    got = multi_ring(16, queues=4, vcpus=16, pcpus=64, **p)
    assert got == pytest.approx(4 * ticket(4, 7.0, 8.0, 0.3), rel=1e-12)
    # a shared lock can only lower it
    assert multi_ring(16, queues=4, vcpus=16, pcpus=64, **dict(p, t_shared=1.5)) < got
