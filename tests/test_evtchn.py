"""Event channels: binding, pending and mask bits, counts of notifications and upcalls."""

import threading

import pytest

from xbq.xen.evtchn import (
    EVTCHNSTAT_closed,
    EVTCHNSTAT_unbound,
    evtchn_alloc_unbound,
    evtchn_bind_interdomain,
    evtchn_close,
    evtchn_is_pending,
    evtchn_test_and_clear_pending,
    mask_evtchn,
    new_evtchn_table,
    notify_remote_via_evtchn,
    unmask_evtchn,
)


@pytest.fixture
def pair():
    ev = new_evtchn_table(16)
    fport = evtchn_alloc_unbound(ev, 1, 0)
    bport = evtchn_bind_interdomain(ev, 0, 1, fport)
    return ev, fport, bport


def test_notify_sets_remote_pending_once(pair):
    ev, fport, bport = pair
    assert fport != bport
    assert notify_remote_via_evtchn(ev, fport)  # raises an upcall at the backend
    assert evtchn_is_pending(ev, bport) and not evtchn_is_pending(ev, fport)
    assert not notify_remote_via_evtchn(ev, fport)  # already pending: no second upcall
    assert ev[fport]["sent"] == 2 and ev[bport]["upcalls"] == 1
    assert evtchn_test_and_clear_pending(ev, bport)
    assert not evtchn_test_and_clear_pending(ev, bport)
    assert notify_remote_via_evtchn(ev, bport) and evtchn_is_pending(ev, fport)


def test_mask_defers_upcall_until_unmask(pair):
    ev, fport, bport = pair
    mask_evtchn(ev, bport)
    assert not notify_remote_via_evtchn(ev, fport)
    assert evtchn_is_pending(ev, bport) and ev[bport]["upcalls"] == 0
    unmask_evtchn(ev, bport)
    assert ev[bport]["upcalls"] == 1


def test_bad_binds_are_refused(pair):
    ev, fport, _ = pair
    with pytest.raises(ValueError):
        evtchn_bind_interdomain(ev, 0, 1, 15)  # not an unbound port
    with pytest.raises(ValueError):
        evtchn_bind_interdomain(ev, 0, 1, fport)  # already bound
    with pytest.raises(ValueError):
        evtchn_bind_interdomain(ev, 2, 1, evtchn_alloc_unbound(ev, 1, 0))  # wrong domain


def test_close_frees_both_ends(pair):
    ev, fport, bport = pair
    evtchn_close(ev, fport)
    assert ev[fport]["state"] == EVTCHNSTAT_closed and ev[bport]["state"] == EVTCHNSTAT_unbound


@pytest.mark.threads
def test_counts_exact_under_concurrent_notifiers(pair):
    ev, fport, _ = pair
    notify_remote_via_evtchn(ev, fport)  # compile before the threads start
    n, per = 4, 20_000

    def spam():
        for _ in range(per):
            notify_remote_via_evtchn(ev, fport)

    threads = [threading.Thread(target=spam) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ev[fport]["sent"] == 1 + n * per
