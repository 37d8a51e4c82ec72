"""Event channels: ports with pending and mask bits, and the count of notifications sent.

One :class:`evtchn_table` holds every port of the model (the hypervisor's view); entry ``p``
belongs to domain ``owner[p]``, and an interdomain channel links two entries through
``remote``. ``notify_remote_via_evtchn(ev, p)`` is ``EVTCHNOP_send``: it counts one
notification on ``p`` and sets the remote port pending. The receiver sees an upcall only if the
port was not already pending and is not masked; a masked port stays pending and fires when it
is unmasked (the 2-level ABI's mask bit). ``pending`` and the counters use atomics, so a sender
and a receiver on different threads never lose an event.

Port states follow ``EVTCHNSTAT_*`` of ``event_channel.h``: closed, unbound (allocated by
``EVTCHNOP_alloc_unbound``, waiting for the peer) and interdomain (bound).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from xbq._jit import kernel
from xbq.atomic import atomic_fetch_add, atomic_load, atomic_store, atomic_xchg
from xbq.errors import XbqError

EVTCHNSTAT_closed = 0
EVTCHNSTAT_unbound = 1
EVTCHNSTAT_interdomain = 2

evtchn_table = namedtuple(
    "evtchn_table", ["state", "owner", "remote", "pending", "mask", "sent", "upcalls"])
evtchn_table.__doc__ = """Every event-channel port of the model.

state : int8[n]     EVTCHNSTAT_closed / _unbound / _interdomain
owner : int32[n]    domain that owns the port
remote : int32[n]   the bound peer port (or, while unbound, -1 - the domain allowed to bind)
pending, mask : int32[n]  the two bits of the 2-level ABI (atomic)
sent : int64[n]     notifications sent from this port
upcalls : int64[n]  notifications that raised an upcall on this port
"""


def new_evtchn_table(nr_ports: int) -> evtchn_table:
    """Return ``nr_ports`` closed ports."""
    return evtchn_table(np.zeros(nr_ports, np.int8), np.full(nr_ports, -1, np.int32),
                        np.full(nr_ports, -1, np.int32), np.zeros(nr_ports, np.int32),
                        np.zeros(nr_ports, np.int32), np.zeros(nr_ports, np.int64),
                        np.zeros(nr_ports, np.int64))


def evtchn_alloc_unbound(ev: evtchn_table, dom: int, remote_dom: int) -> int:
    """``EVTCHNOP_alloc_unbound``: a port of ``dom`` that ``remote_dom`` may bind; its number."""
    free = np.flatnonzero(ev.state == EVTCHNSTAT_closed)
    if free.size == 0:
        raise XbqError("no free event-channel port")
    port = int(free[0])
    ev.state[port] = EVTCHNSTAT_unbound
    ev.owner[port] = dom
    ev.remote[port] = -1 - remote_dom
    ev.pending[port] = 0
    ev.mask[port] = 0
    return port


def evtchn_bind_interdomain(ev: evtchn_table, dom: int, remote_dom: int, remote_port: int) -> int:
    """``EVTCHNOP_bind_interdomain``: bind a new port of ``dom`` to ``remote_port``.

    Returns the local port, or raises ``ValueError`` if ``remote_port`` is not an unbound port
    of ``remote_dom`` offered to ``dom`` (Xen's -EINVAL).
    """
    if not (0 <= remote_port < ev.state.size) or ev.state[remote_port] != EVTCHNSTAT_unbound \
            or ev.owner[remote_port] != remote_dom or ev.remote[remote_port] != -1 - dom:
        raise ValueError(
            f"port {remote_port} of domain {remote_dom} is not offered to domain {dom}")
    local = evtchn_alloc_unbound(ev, dom, remote_dom)
    ev.state[local] = ev.state[remote_port] = EVTCHNSTAT_interdomain
    ev.remote[local] = remote_port
    ev.remote[remote_port] = local
    return local


def evtchn_close(ev: evtchn_table, port: int) -> None:
    """``EVTCHNOP_close``: close ``port``; a bound peer goes back to unbound."""
    peer = int(ev.remote[port])
    if ev.state[port] == EVTCHNSTAT_interdomain and peer >= 0:
        ev.state[peer] = EVTCHNSTAT_unbound
        ev.remote[peer] = -1 - int(ev.owner[port])
    ev.state[port] = EVTCHNSTAT_closed
    ev.remote[port] = -1
    ev.owner[port] = -1


@kernel(inline="always")
def notify_remote_via_evtchn(ev, port):
    """``EVTCHNOP_send`` from ``port``: count it, set the peer pending.

    Returns True if this raised an upcall at the peer (it was not pending and is not masked),
    False if it merged with a pending event, hit a masked port or the channel is not bound.
    """
    if ev.state[port] != EVTCHNSTAT_interdomain:
        return False
    atomic_fetch_add(ev.sent, port, 1)
    remote = ev.remote[port]
    was_pending = atomic_xchg(ev.pending, remote, 1)
    if was_pending == 0 and atomic_load(ev.mask, remote) == 0:
        atomic_fetch_add(ev.upcalls, remote, 1)
        return True
    return False


@kernel
def evtchn_test_and_clear_pending(ev, port):
    """Clear the pending bit of ``port``; return True if it was set (an event to handle)."""
    return atomic_xchg(ev.pending, port, 0) != 0


@kernel
def evtchn_is_pending(ev, port):
    """True if ``port`` has an event pending (an acquire load; does not clear it)."""
    return atomic_load(ev.pending, port) != 0


@kernel
def mask_evtchn(ev, port):
    """Set the mask bit of ``port``: events stay pending and raise no upcall."""
    atomic_store(ev.mask, port, 1)


@kernel
def unmask_evtchn(ev, port):
    """Clear the mask bit; return True if an event was pending (it is delivered now)."""
    atomic_store(ev.mask, port, 0)
    if atomic_load(ev.pending, port) != 0:
        atomic_fetch_add(ev.upcalls, port, 1)
        return True
    return False
