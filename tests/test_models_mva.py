"""Exact, load-dependent and approximate MVA against closed forms and invariants."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xbq.errors import XbqError
from xbq.models import get_model, ld_mva, ld_mva_textbook, mva, repairman_state, schweitzer


@pytest.mark.parametrize("S,Z", [(2.0, 10.0), (5.0, 1.0), (1.0, 50.0)])
def test_one_queue_with_think_time_is_the_repairman(S, Z):
    res = mva(40, [S], think=Z)
    for n in (1, 2, 5, 17, 40):
        st_ = repairman_state(n, S, Z)
        assert res.throughput[n - 1] == pytest.approx(st_.throughput, rel=1e-10)
        assert res.queue[n - 1, 0] == pytest.approx(st_.queue, rel=1e-9)
        # interactive response-time law
        assert res.response[n - 1] == pytest.approx(st_.response, rel=1e-9)


def test_hand_computed_two_station_network():
    # D = (1, 2), Z = 0. n=1: R=(1,2), X=1/3, Q=(1/3, 2/3)
    # n=2: R=(1+1/3, 2+4/3) = (4/3, 10/3), X = 2/(14/3) = 3/7
    res = mva(2, [1.0, 2.0])
    assert res.throughput[0] == pytest.approx(1e6 / 3)
    assert res.throughput[1] == pytest.approx(3e6 / 7)
    np.testing.assert_allclose(res.residence[1], [4 / 3, 10 / 3])


def test_bounds_and_monotone():
    d = np.array([3.0, 1.0, 0.5])
    z = 4.0
    res = mva(100, d, delay=[False, False, True], think=z)
    n = res.n
    bound = np.minimum(n / (d.sum() + z), 1 / d[:2].max()) * 1e6
    assert np.all(res.throughput <= bound * (1 + 1e-12))
    assert np.all(np.diff(res.throughput) >= 0)
    assert res.throughput[-1] == pytest.approx(1e6 / 3.0, rel=1e-3)


def test_ld_mva_single_servers_equal_exact_mva():
    d = [2.0, 1.0, 0.7]
    a = ld_mva(30, d, servers=[1, 1, 1], think=3.0)
    b = mva(30, d, think=3.0)
    np.testing.assert_allclose(a.throughput, b.throughput, rtol=1e-10)
    np.testing.assert_allclose(a.queue, b.queue, rtol=1e-8)


def test_ld_mva_infinite_servers_is_a_delay_station():
    a = ld_mva(20, [2.0, 5.0], servers=[1, np.inf], think=0.0)
    b = mva(20, [2.0, 5.0], delay=[False, True])
    np.testing.assert_allclose(a.throughput, b.throughput, rtol=1e-10)


@pytest.mark.parametrize("m", [2, 3, 8])
def test_ld_mva_multi_server_is_the_mmm_repairman(m):
    S, Z = 4.0, 6.0
    res = ld_mva(24, [S], servers=[m], think=Z)
    for n in (1, m, 2 * m, 24):
        assert res.throughput[n - 1] == pytest.approx(
            repairman_state(n, S, Z, servers=m).throughput, rel=1e-10)


def test_ld_mva_marginals_stay_probabilities_to_256_where_textbook_goes_negative():
    # a saturated single-server bottleneck next to a 16-server station
    d, servers = [1.0, 16.0], [1, 16]
    res = ld_mva(256, d, servers=servers)
    P = res.marginals
    assert P.min() >= 0.0 and P.max() <= 1.0
    n = np.arange(257)
    sums = P.sum(axis=2)
    np.testing.assert_allclose(sums, 1.0, atol=1e-12)
    # no mass above the population
    mask = np.arange(257)[None, :] > n[:, None]
    assert np.all(P[:, mask] == 0)
    # conservation: queues add up to the population
    np.testing.assert_allclose(res.queue.sum(axis=1), np.arange(1, 257), rtol=1e-9)
    assert 0.99e6 < res.throughput[-1] <= 1e6
    # the textbook recursion agrees early, then its p(0|n) goes negative
    X_tb, P_tb = ld_mva_textbook(64, d, servers=servers)
    np.testing.assert_allclose(X_tb[:20], res.throughput[:20], rtol=1e-6)
    assert P_tb.min() < 0


@given(st.lists(st.floats(0.05, 20.0), min_size=1, max_size=4),
       st.lists(st.integers(1, 8), min_size=4, max_size=4), st.floats(0.0, 50.0))
def test_ld_mva_is_valid_for_random_networks(d, servers, z):
    res = ld_mva(48, d, servers=servers[: len(d)], think=z)
    assert np.all(res.marginals >= 0) and np.all(res.marginals <= 1 + 1e-12)
    np.testing.assert_allclose(res.marginals.sum(axis=2), 1.0, atol=1e-9)
    assert np.all(np.diff(res.throughput) >= -1e-9 * res.throughput[1:])
    # Little on the whole loop: sum Q + X*Z = n
    np.testing.assert_allclose(res.queue.sum(axis=1) + res.throughput / 1e6 * z,
                               np.arange(1, 49), rtol=1e-8)


def test_schweitzer_is_close_to_exact_and_exact_at_one():
    d, z = [3.0, 1.0, 0.5], 4.0
    exact = mva(64, d, think=z).throughput
    n = np.array([1, 2, 4, 8, 16, 32, 64.0])
    approx = schweitzer(n, d, think=z)
    assert approx[0] == pytest.approx(exact[0], rel=1e-9)
    err = np.abs(approx - exact[n.astype(int) - 1]) / exact[n.astype(int) - 1]
    assert err.max() < 0.06
    assert approx[-1] == pytest.approx(1e6 / 3.0, rel=0.01)


def test_registry_mva_model_equals_ld_mva():
    spec = get_model("mva")
    n = np.array([1, 3, 8, 16, 40, 64.0])
    got = spec(n, t_cpu=12.0, t_lock=1.5, vcpus=8)
    ref = ld_mva(64, [12.0, 1.5], servers=[8, 1], marginals=False).throughput
    np.testing.assert_allclose(got, ref[n.astype(int) - 1], rtol=1e-10)


def test_bad_input():
    with pytest.raises(XbqError):
        mva(0, [1.0])
    with pytest.raises(XbqError):
        mva(5, [-1.0])
    with pytest.raises(XbqError):
        ld_mva(5, [1.0], rates=np.zeros((1, 5)))
    with pytest.raises(XbqError):
        ld_mva(5, [1.0])
