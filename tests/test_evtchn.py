"""Event channels: binding, pending and mask bits, counts of notifications and upcalls."""

import errno
import threading

import pytest

from xbq.xen.evtchn import (
    EvtchnError,
    EVTCHNSTAT_closed,
    EVTCHNSTAT_unbound,
    evtchn_alloc_unbound,
    evtchn_bind_interdomain,
    evtchn_close,
    evtchn_is_pending,
    evtchn_port,
    evtchn_test_and_clear_pending,
    mask_evtchn,
    new_evtchn_table,
    notify_remote_via_evtchn,
    unmask_evtchn,
)


@pytest.fixture
def pair():
    ev = new_evtchn_table(16)
    fport = evtchn_alloc_unbound(ev, 1, 0)  # slots
    bport = evtchn_bind_interdomain(ev, 0, 1, evtchn_port(ev, fport))
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
    for remote_port in (15, 0, -1, 16, 99):  # not an unbound port, reserved, not a port
        with pytest.raises(EvtchnError) as err:
            evtchn_bind_interdomain(ev, 0, 1, remote_port)
        assert err.value.errno == errno.EINVAL
    with pytest.raises(EvtchnError):
        evtchn_bind_interdomain(ev, 0, 1, evtchn_port(ev, fport))  # already bound
    with pytest.raises(EvtchnError):  # offered to dom0, bound by domain 2
        evtchn_bind_interdomain(ev, 2, 1, evtchn_port(ev, evtchn_alloc_unbound(ev, 1, 0)))


def test_each_domain_has_its_own_ports_from_one():
    ev = new_evtchn_table(4, domains=(0, 1))
    a = [evtchn_port(ev, evtchn_alloc_unbound(ev, 1, 0)) for _ in range(3)]
    b = evtchn_port(ev, evtchn_alloc_unbound(ev, 0, 1))
    assert a == [1, 2, 3] and b == 1  # the same numbers in two spaces; port 0 never given
    with pytest.raises(EvtchnError) as err:
        evtchn_alloc_unbound(ev, 1, 0)  # the guest's space is full ...
    assert err.value.errno == errno.ENOSPC
    assert evtchn_port(ev, evtchn_alloc_unbound(ev, 0, 1)) == 2  # ... dom0's is not


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
