"""Event channels: ports with pending and mask bits, and the count of notifications sent.

One :data:`EVTCHN_DTYPE` record array holds every port of the model (the hypervisor's view);
port ``p`` belongs to domain ``owner``, and an interdomain channel links two ports through
``remote``. ``notify_remote_via_evtchn(ev, p)`` is ``EVTCHNOP_send``: it counts one
notification on ``p`` and sets the remote port pending. The receiver sees an upcall only if
the port was not already pending and is not masked; a masked port stays pending and fires
when it is unmasked (the 2-level ABI's mask bit). ``pending``, ``mask`` and the counters are
updated with atomics on the record's fields, so a sender and a receiver on different threads
never lose an event.

Port states follow ``EVTCHNSTAT_*`` of ``event_channel.h``: closed, unbound (allocated by
``EVTCHNOP_alloc_unbound``, waiting for the peer) and interdomain (bound).
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.errors import XbqError
from xbq.xen.atomic import add_i64_at, load_u32_at, store_u32_at, xchg_u32_at

EVTCHNSTAT_closed = 0
EVTCHNSTAT_unbound = 1
EVTCHNSTAT_interdomain = 2

#: One event-channel port: its state, owner, bound peer port (or, while unbound,
#: ``-1 - domain`` allowed to bind), the 2-level ABI's pending and mask bits (atomic), the
#: notifications sent from it and the ones that raised an upcall on it.
EVTCHN_DTYPE = np.dtype([("state", "i1"), ("owner", "<i4"), ("remote", "<i4"),
                         ("pending", "<u4"), ("mask", "<u4"), ("sent", "<i8"),
                         ("upcalls", "<i8")], align=True)
EV_OFF_PENDING = EVTCHN_DTYPE.fields["pending"][1]
EV_OFF_MASK = EVTCHN_DTYPE.fields["mask"][1]
EV_OFF_SENT = EVTCHN_DTYPE.fields["sent"][1]
EV_OFF_UPCALLS = EVTCHN_DTYPE.fields["upcalls"][1]


def new_evtchn_table(nr_ports: int) -> np.ndarray:
    """Return ``nr_ports`` closed ports."""
    ev = np.zeros(nr_ports, EVTCHN_DTYPE)
    ev["owner"] = -1
    ev["remote"] = -1
    return ev


def evtchn_alloc_unbound(ev: np.ndarray, dom: int, remote_dom: int) -> int:
    """``EVTCHNOP_alloc_unbound``: a port of ``dom`` that ``remote_dom`` may bind; its number."""
    free = np.flatnonzero(ev["state"] == EVTCHNSTAT_closed)
    if free.size == 0:
        raise XbqError("no free event-channel port")
    port = int(free[0])
    ev[port] = (EVTCHNSTAT_unbound, dom, -1 - remote_dom, 0, 0, 0, 0)
    return port


def evtchn_bind_interdomain(ev: np.ndarray, dom: int, remote_dom: int, remote_port: int) -> int:
    """``EVTCHNOP_bind_interdomain``: bind a new port of ``dom`` to ``remote_port``.

    Returns the local port, or raises ``ValueError`` if ``remote_port`` is not an unbound port
    of ``remote_dom`` offered to ``dom`` (Xen's -EINVAL).
    """
    if not (0 <= remote_port < ev.size) or ev[remote_port]["state"] != EVTCHNSTAT_unbound \
            or ev[remote_port]["owner"] != remote_dom or ev[remote_port]["remote"] != -1 - dom:
        raise ValueError(
            f"port {remote_port} of domain {remote_dom} is not offered to domain {dom}")
    local = evtchn_alloc_unbound(ev, dom, remote_dom)
    ev["state"][[local, remote_port]] = EVTCHNSTAT_interdomain
    ev["remote"][local] = remote_port
    ev["remote"][remote_port] = local
    return local


def evtchn_close(ev: np.ndarray, port: int) -> None:
    """``EVTCHNOP_close``: close ``port``; a bound peer goes back to unbound."""
    peer = int(ev[port]["remote"])
    if ev[port]["state"] == EVTCHNSTAT_interdomain and peer >= 0:
        ev["state"][peer] = EVTCHNSTAT_unbound
        ev["remote"][peer] = -1 - int(ev[port]["owner"])
    ev["state"][port] = EVTCHNSTAT_closed
    ev["remote"][port] = -1
    ev["owner"][port] = -1


@kernel
def notify_remote_via_evtchn(ev, port):
    """``EVTCHNOP_send`` from ``port``: count it, set the peer pending.

    Returns True if this raised an upcall at the peer (it was not pending and is not masked),
    False if it merged with a pending event, hit a masked port or the channel is not bound.
    """
    if ev[port].state != EVTCHNSTAT_interdomain:
        return False
    add_i64_at(ev, port, EV_OFF_SENT, 1)
    remote = ev[port].remote
    was_pending = xchg_u32_at(ev, remote, EV_OFF_PENDING, 1)
    if was_pending == 0 and load_u32_at(ev, remote, EV_OFF_MASK) == 0:
        add_i64_at(ev, remote, EV_OFF_UPCALLS, 1)
        return True
    return False


@kernel
def evtchn_test_and_clear_pending(ev, port):
    """Clear the pending bit of ``port``; return True if it was set (an event to handle)."""
    return xchg_u32_at(ev, port, EV_OFF_PENDING, 0) != 0


@kernel
def evtchn_set_pending(ev, port):
    """Set the pending bit of ``port`` (a backend re-arming its own ``waiting_reqs``)."""
    store_u32_at(ev, port, EV_OFF_PENDING, 1)


@kernel
def evtchn_is_pending(ev, port):
    """True if ``port`` has an event pending (an acquire load; does not clear it)."""
    return load_u32_at(ev, port, EV_OFF_PENDING) != 0


@kernel
def mask_evtchn(ev, port):
    """Set the mask bit of ``port``: events stay pending and raise no upcall."""
    store_u32_at(ev, port, EV_OFF_MASK, 1)


@kernel
def unmask_evtchn(ev, port):
    """Clear the mask bit; return True if an event was pending (it is delivered now)."""
    store_u32_at(ev, port, EV_OFF_MASK, 0)
    if load_u32_at(ev, port, EV_OFF_PENDING) != 0:
        add_i64_at(ev, port, EV_OFF_UPCALLS, 1)
        return True
    return False
