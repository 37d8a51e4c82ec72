"""A mechanistic model of Xen PV block I/O: one ring behind one lock, or Q per-queue rings.

Each fio job is a customer that loops: guest CPU work for one request (``t_cpu``: fio,
the block layer, blkfront's request setup outside any lock), then the ring's lock
(``t_ring``: ``blkif_queue_request`` and the response handling done under the ring lock)
and work under state shared by every ring of the device (``t_shared``: with one ring this
is the same lock; with per-queue rings it is a device-wide lock, e.g. the grant/persistent
grant bookkeeping). Both locks are ticket spin locks: a hand-off with k contenders costs
``t_handoff * k / 2`` (Boyd-Wickizer et al. 2012), solved exactly as a birth–death chain.

Further mechanisms, each a physical constant of the machine:

* At most ``vcpus`` jobs run (and spin) at once; jobs beyond ``vcpus`` sleep in the guest
  scheduler. A completion whose job is asleep (probability ``1 - vcpus/jobs``) wakes it
  inside the completion path (``blkif_interrupt`` ends requests while holding the lock it
  holds): ``t_wake`` µs more under that lock. This is what makes the multi-ring curve keep
  falling past 16 jobs while the saturated single ring stays flat.
* The guest's running vCPUs share ``pcpus`` physical CPUs (what the host leaves the guest
  next to dom0's backends): with n > pcpus busy vCPUs each runs at speed ``pcpus/n``, so
  every CPU-bound time stretches by ``n/pcpus`` (the cache-line hand-off does not).
* ``single_ring``: ``queues = 1``. ``multi_ring``: ``queues = Q`` rings, each with its own
  lock; blk-mq maps CPUs to rings, so with at most one CPU per ring the ring lock is
  uncontended and only the shared lock is a queue (exact). With more running CPUs than
  rings both locks queue; the model then takes the lower of the two single-lock chains
  (ring locks with the shared work as CPU time, and vice versa) — an approximation, not an
  exact two-lock network. The seed table (16 rings, 16 vCPUs) never needs it.
* Each ring has one backend thread (``t_back`` µs per request) and at most ``ring_size``
  requests in flight over the backend and device (``t_dev``): throughput ceilings
  ``queues/t_back`` and ``queues*ring_size/(t_back + t_dev)``.

The same parameter set describes both drivers on one machine; only ``queues`` differs.
"""

from __future__ import annotations

import numpy as np

from xbq.models import _kernels
from xbq.models._checks import concurrency, positive, shape_out

US_PER_S = 1e6

#: Order of the columns of the kernel's parameter matrix.
PARAMS = ("t_cpu", "t_ring", "t_shared", "t_handoff", "t_wake", "pcpus", "vcpus", "queues",
          "ring_size", "t_back", "t_dev")

DEFAULTS = dict(t_cpu=8.0, t_ring=8.0, t_shared=1.5, t_handoff=0.3, t_wake=2.0, pcpus=16.0,
                vcpus=16.0, queues=1.0, ring_size=32.0, t_back=0.5, t_dev=1.0)


def throughput(jobs, *, queues: float = 1, **params) -> np.ndarray | float:
    """Aggregate IOPS of the xen-blk model at each job count.

    Parameters
    ----------
    jobs : int or array_like of int
        fio jobs (>= 1).
    queues : float
        Rings (1 = single_ring, Q = multi_ring with Q rings).
    **params
        Any of :data:`PARAMS` (µs for times, counts for ``pcpus``, ``vcpus``, ``ring_size``);
        unspecified ones take :data:`DEFAULTS`.

    Returns
    -------
    float or numpy.ndarray
        Throughput (IOPS).
    """
    x = concurrency(jobs, integer=True)
    unknown = set(params) - set(PARAMS)
    if unknown:
        from xbq.errors import XbqError

        raise XbqError(f"unknown xenblk parameter(s): {', '.join(sorted(unknown))}")
    values = {**DEFAULTS, **params, "queues": queues}
    for name in ("t_cpu", "pcpus", "vcpus", "queues", "ring_size"):
        positive(name, values[name])
    for name in ("t_ring", "t_shared", "t_handoff", "t_wake", "t_back", "t_dev"):
        positive(name, values[name], allow_zero=True)
    row = np.array([[values[p] for p in PARAMS]], dtype=float)
    return shape_out(jobs, _kernels.xenblk_batch(x, row)[0] * US_PER_S)


def single_ring(jobs, **params):
    """The legacy driver: one ring, one lock (``queues = 1``)."""
    return throughput(jobs, queues=1, **params)


def multi_ring(jobs, queues: int = 16, **params):
    """The blk-mq driver: ``queues`` rings, each with its own lock."""
    return throughput(jobs, queues=queues, **params)
