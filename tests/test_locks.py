"""Spinlocks: mutual exclusion under real threads, more threads than cores, bounded waits."""

import threading
import time

import numpy as np
import pytest
from numba import njit

from xbq.engines.native.locks import (
    LOCK_BROKEN,
    LOCK_KINDS,
    LOCK_OK,
    LOCK_TIMEOUT,
    lock_kind,
    lock_stats,
    new_locks,
    new_mcs_nodes,
    pv_lock,
    pv_unlock,
    spin_lock,
    spin_unlock,
    ticket_unlock,
)
from xbq.errors import XbqError
from xbq.xen.atomic import atomic_load, sched_yield

pytestmark = pytest.mark.threads
TIMEOUT_NS = 20_000_000_000


@njit(cache=True, nogil=True)
def _critical(lk, kind, nodes, me, counter, m, timeout_ns, status, go):
    """``m`` times: take lock 1, update ``counter`` non-atomically (read, work, write), release."""
    while atomic_load(go, 0) == 0:  # start together
        sched_yield()
    for _ in range(m):
        st = spin_lock(lk, 1, kind, nodes, me, timeout_ns)
        if st != LOCK_OK:
            status[me] = st
            return
        v = counter[0]
        x = 0
        for k in range(20):  # widen the window a racing thread would need
            x += k * v
        counter[0] = v + 1
        counter[1] += x & 1
        st = spin_unlock(lk, 1, kind, nodes, me, timeout_ns)
        if st != LOCK_OK:
            status[me] = st
            return


def _hammer(kind, n, m):
    lk = new_locks(3)  # use the middle one: neighbours must stay untouched
    nodes = new_mcs_nodes(n)
    counter = np.zeros(2, np.int64)
    status = np.zeros(n, np.int64)
    go = np.zeros(1, np.int64)
    threads = [threading.Thread(target=_critical,
                                args=(lk, kind, nodes, me, counter, m, TIMEOUT_NS, status, go))
               for me in range(n)]
    for t in threads:
        t.start()
    go[0] = 1
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a lock waiter hung"
    return lk, counter, status


@pytest.mark.parametrize("name", list(LOCK_KINDS))
def test_mutual_exclusion(name):
    n, m = 4, 20_000
    lk, counter, status = _hammer(LOCK_KINDS[name], n, m)
    assert (status == LOCK_OK).all()
    assert counter[0] == n * m
    st = lock_stats(lk, 1)
    assert st["acquired"] == n * m
    assert 0 <= st["contended"] <= n * m and st["timeouts"] == 0
    assert (st["contended"] == 0) == (st["wait_ns"] == 0)
    assert st["max_waiters"] <= n
    assert not lk[:16].any() and not lk[32:].any()  # other locks untouched


@pytest.mark.parametrize("name", list(LOCK_KINDS))
def test_more_threads_than_cores_do_not_hang(name):
    n, m = 24, 1_500  # 12x oversubscribed on a 2-core machine
    lk, counter, status = _hammer(LOCK_KINDS[name], n, m)
    assert (status == LOCK_OK).all()
    assert counter[0] == n * m
    st = lock_stats(lk, 1)
    assert st["acquired"] == n * m and st["timeouts"] == 0
    assert (st["contended"] == 0) == (st["wait_ns"] == 0)


@njit(cache=True, nogil=True)
def _try(lk, kind, nodes, me, timeout_ns):
    return spin_lock(lk, 0, kind, nodes, me, timeout_ns)


@pytest.mark.parametrize("name", list(LOCK_KINDS))
def test_wait_is_bounded_and_breaks_the_lock(name):
    kind = LOCK_KINDS[name]
    lk, nodes = new_locks(1), new_mcs_nodes(3)
    assert _try(lk, kind, nodes, 0, TIMEOUT_NS) == LOCK_OK  # held, never released
    out = []
    t = threading.Thread(target=lambda: out.append(_try(lk, kind, nodes, 1, 50_000_000)))
    t.start()
    t.join(timeout=30)
    assert not t.is_alive() and out == [LOCK_TIMEOUT]
    st = lock_stats(lk, 0)
    # the pv waiter blocks instead of yielding (and nobody kicks it)
    assert st["timeouts"] == 1 and st["blocks" if name == "pv" else "yields"] > 0
    # the abandoned ticket/node poisons the lock: the next waiter fails fast
    assert _try(lk, kind, nodes, 2, TIMEOUT_NS) == LOCK_BROKEN


@pytest.mark.parametrize("name", list(LOCK_KINDS))
def test_contention_is_counted(name):
    """Hold the lock while three threads queue up; each of them then waited."""
    kind, n = LOCK_KINDS[name], 3
    lk, nodes = new_locks(2), new_mcs_nodes(n + 1)
    counter, status, go = np.zeros(2, np.int64), np.zeros(n + 1, np.int64), np.ones(1, np.int64)
    assert spin_lock(lk, 1, kind, nodes, n, TIMEOUT_NS) == LOCK_OK  # the main thread holds it
    threads = [threading.Thread(target=_critical,
                                args=(lk, kind, nodes, me, counter, 1, TIMEOUT_NS, status, go))
               for me in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    assert counter[0] == 0  # nobody got in
    assert spin_unlock(lk, 1, kind, nodes, n, TIMEOUT_NS) == LOCK_OK
    for t in threads:
        t.join(timeout=30)
    st = lock_stats(lk, 1)
    assert counter[0] == n and (status == 0).all()
    assert st["acquired"] == n + 1 and st["contended"] == n
    assert st["wait_ns"] >= n * 150_000_000 and 2 <= st["max_waiters"] <= n + 1


def test_uncontended_lock_counts_no_wait():
    for kind in LOCK_KINDS.values():
        lk, nodes = new_locks(1), new_mcs_nodes(1)
        for _ in range(10):
            assert _try(lk, kind, nodes, 0, TIMEOUT_NS) == LOCK_OK
            assert spin_unlock(lk, 0, kind, nodes, 0, TIMEOUT_NS) == LOCK_OK
        st = lock_stats(lk, 0)
        assert st["acquired"] == 10 and st["contended"] == 0 and st["wait_ns"] == 0


def test_unknown_lock_is_a_one_line_error():
    with pytest.raises(XbqError, match="unknown lock 'spin'"):
        lock_kind("spin")
    assert lock_kind("mcs") == LOCK_KINDS["mcs"]


# --- the paravirtual ticket lock: every blocked waiter is kicked by the release it waits for


@njit(cache=True, nogil=True)
def _pv_worker(lk, nodes, me, counter, m, threshold, timeout_ns, status, go, kick):
    """``m`` times: ``pv_lock`` (blocking after ``threshold`` spins), a non-atomic update,
    release with the kick (``pv_unlock``) or, as a broken lock would, without it."""
    while atomic_load(go, 0) == 0:
        sched_yield()
    for i in range(m):
        st = pv_lock(lk, 0, nodes, me, timeout_ns, threshold)
        if st != LOCK_OK:
            status[me] = st
            return
        v = counter[0]
        x = 0
        if i % 8 == 0:
            sched_yield()  # a holder the host preempts: its waiters give up spinning
        for k in range(50):
            x += k * v
        counter[0] = v + 1
        counter[1] += x & 1
        if kick:
            pv_unlock(lk, 0, nodes)
        else:
            ticket_unlock(lk, 0)


def _pv_stress(n, m, threshold, timeout_ns, kick):
    lk, nodes = new_locks(1), new_mcs_nodes(n)
    counter, status, go = np.zeros(2, np.int64), np.zeros(n, np.int64), np.zeros(1, np.int64)
    threads = [threading.Thread(target=_pv_worker, args=(lk, nodes, me, counter, m, threshold,
                                                         timeout_ns, status, go, kick))
               for me in range(n)]
    for t in threads:
        t.start()
    go[0] = 1
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a pv waiter hung past its bound"
    return lock_stats(lk, 0), counter, status


def test_pv_lock_no_lost_wakeup_under_stress():
    """8 threads on 2 cores, blocking after 8 spins, every 8th holder yielding its CPU inside
    the lock: hundreds of waits block, and each is ended by a kick from the release that
    serves its ticket (a lost kick would leave the waiter asleep until its 20 s bound, a
    timeout)."""
    n, m = 8, 5_000
    st, counter, status = _pv_stress(n, m, 8, TIMEOUT_NS, True)
    assert (status == LOCK_OK).all() and counter[0] == n * m
    assert st["acquired"] == n * m and st["timeouts"] == 0
    assert st["blocks"] > 100  # the slow path was exercised
    assert st["kicks"] >= st["blocks"]  # every block ended by a kick (some kicks beat the block)


def test_pv_lock_without_the_kick_loses_its_waiters():
    """The test of the test: a release that serves the next ticket but kicks nobody leaves
    a blocked waiter asleep until its bound."""
    st, counter, status = _pv_stress(4, 2_000, 8, 300_000_000, False)
    assert (status == LOCK_TIMEOUT).any() and st["timeouts"] >= 1 and st["kicks"] == 0
