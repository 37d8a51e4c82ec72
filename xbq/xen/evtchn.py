"""Event channels: ports with pending and mask bits, and the count of notifications sent.

One :data:`EVTCHN_DTYPE` record array holds every port of the model (the hypervisor's view):
each domain has its own port space, as in Xen, a block of ``nr_ports`` records whose
``port`` numbers run from 0 (reserved, never allocated, as Xen reserves it) to
``nr_ports - 1``. A domain that allocates all of its ports exhausts only its own. A port is
named by its domain and number (what XenStore carries, ``event-channel = "1"``); the kernels
address its record by its index in the array, its *slot* (:func:`evtchn_slot`,
:func:`evtchn_port`), as the hypervisor addresses ``struct evtchn``. An interdomain channel
links two slots through ``remote``. ``notify_remote_via_evtchn(ev, s)`` is
``EVTCHNOP_send``: it counts one notification on slot ``s`` and sets the remote port
pending. The receiver sees an upcall only if
the port was not already pending and is not masked; a masked port stays pending and fires
when it is unmasked (the 2-level ABI's mask bit). ``pending``, ``mask`` and the counters are
updated with atomics on the record's fields, so a sender and a receiver on different threads
never lose an event.

Port states follow ``EVTCHNSTAT_*`` of ``event_channel.h``: closed, unbound (allocated by
``EVTCHNOP_alloc_unbound``, waiting for the peer) and interdomain (bound).
"""

from __future__ import annotations

import errno

import numpy as np

from xbq._jit import kernel
from xbq.xen.atomic import add_i64_at, load_u32_at, store_u32_at, xchg_u32_at

EVTCHNSTAT_closed = 0
EVTCHNSTAT_unbound = 1
EVTCHNSTAT_interdomain = 2

#: One event-channel port: its state, its domain (``owner``) and number in that domain's
#: space (``port``), the bound peer's slot (or, while unbound, ``-1 - domain`` allowed to
#: bind), the 2-level ABI's pending and mask bits (atomic), the notifications sent from it and
#: the ones that raised an upcall on it.
EVTCHN_DTYPE = np.dtype([("state", "i1"), ("owner", "<i4"), ("port", "<i4"),
                         ("remote", "<i4"), ("pending", "<u4"), ("mask", "<u4"),
                         ("sent", "<i8"), ("upcalls", "<i8")], align=True)
EV_OFF_PENDING = EVTCHN_DTYPE.fields["pending"][1]
EV_OFF_MASK = EVTCHN_DTYPE.fields["mask"][1]
EV_OFF_SENT = EVTCHN_DTYPE.fields["sent"][1]
EV_OFF_UPCALLS = EVTCHN_DTYPE.fields["upcalls"][1]


class EvtchnError(ValueError):
    """A refused event-channel operation, with Xen's error number (``EINVAL``, ``ENOSPC``)."""

    def __init__(self, err: int, message: str):
        super().__init__(message)
        self.errno = err


def new_evtchn_table(nr_ports: int, domains=(0, 1)) -> np.ndarray:
    """Closed ports: ``nr_ports`` for each domain of ``domains`` (port 0 of each reserved)."""
    if nr_ports < 2:
        raise ValueError("a domain needs at least two ports (port 0 is reserved)")
    ev = np.zeros(nr_ports * len(domains), EVTCHN_DTYPE)
    ev["owner"] = np.repeat(np.asarray(domains, np.int32), nr_ports)
    ev["port"] = np.tile(np.arange(nr_ports, dtype=np.int32), len(domains))
    ev["remote"] = -1
    return ev


def evtchn_slot(ev: np.ndarray, dom: int, port: int) -> int:
    """The slot of ``dom``'s port number ``port``, or -1 if the domain has no such port."""
    hit = np.flatnonzero((ev["owner"] == dom) & (ev["port"] == port))
    return int(hit[0]) if hit.size and port > 0 else -1


def evtchn_port(ev: np.ndarray, slot: int) -> int:
    """The port number (in its domain's space) of the port in ``slot``."""
    return int(ev[slot]["port"])


def evtchn_alloc_unbound(ev: np.ndarray, dom: int, remote_dom: int) -> int:
    """``EVTCHNOP_alloc_unbound``: ``dom``'s lowest free port, which ``remote_dom`` may bind;
    its slot. Raises :class:`EvtchnError` (``ENOSPC``) when ``dom`` has no free port."""
    free = np.flatnonzero((ev["owner"] == dom) & (ev["state"] == EVTCHNSTAT_closed)
                          & (ev["port"] > 0))
    if free.size == 0:
        raise EvtchnError(errno.ENOSPC, f"domain {dom} has no free event-channel port")
    slot = int(free[0])
    ev["state"][slot] = EVTCHNSTAT_unbound
    ev["remote"][slot] = -1 - remote_dom
    for f in ("pending", "mask", "sent", "upcalls"):
        ev[f][slot] = 0
    return slot


def evtchn_bind_interdomain(ev: np.ndarray, dom: int, remote_dom: int, remote_port: int) -> int:
    """``EVTCHNOP_bind_interdomain``: bind a new port of ``dom`` to ``remote_dom``'s port
    number ``remote_port``; the new port's slot.

    Raises :class:`EvtchnError`: ``EINVAL`` if ``remote_port`` is not an unbound port of
    ``remote_dom`` offered to ``dom``, ``ENOSPC`` if ``dom`` has no free port.
    """
    remote = evtchn_slot(ev, remote_dom, remote_port)
    if remote < 0 or ev[remote]["state"] != EVTCHNSTAT_unbound \
            or ev[remote]["remote"] != -1 - dom:
        raise EvtchnError(errno.EINVAL, f"port {remote_port} of domain {remote_dom} is not "
                                        f"offered to domain {dom}")
    local = evtchn_alloc_unbound(ev, dom, remote_dom)
    ev["state"][[local, remote]] = EVTCHNSTAT_interdomain
    ev["remote"][local] = remote
    ev["remote"][remote] = local
    return local


def evtchn_close(ev: np.ndarray, slot: int) -> None:
    """``EVTCHNOP_close``: close the port in ``slot``; a bound peer goes back to unbound."""
    peer = int(ev[slot]["remote"])
    if ev[slot]["state"] == EVTCHNSTAT_interdomain and peer >= 0:
        ev["state"][peer] = EVTCHNSTAT_unbound
        ev["remote"][peer] = -1 - int(ev[slot]["owner"])
    ev["state"][slot] = EVTCHNSTAT_closed
    ev["remote"][slot] = -1


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
