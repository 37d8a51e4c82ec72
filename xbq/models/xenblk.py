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
from numba import njit

from xbq.models._checks import concurrency, positive, shape_out
from xbq.models.repairman import birth_death

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
    return shape_out(jobs, xenblk_batch(x, row)[0] * US_PER_S)


def single_ring(jobs, **params):
    """The legacy driver: one ring, one lock (``queues = 1``)."""
    return throughput(jobs, queues=1, **params)


def multi_ring(jobs, queues: int = 16, **params):
    """The blk-mq driver: ``queues`` rings, each with its own lock."""
    return throughput(jobs, queues=queues, **params)


# --- kernels (no argument checks: called through the wrappers above) ---------------------


@njit(cache=True)
def xenblk_batch(x, P):
    """The xen-blk model for B parameter rows; see :func:`xbq.models.xenblk.throughput`.

    Columns of ``P``: t_cpu, t_ring, t_shared, t_handoff, t_wake, pcpus, vcpus, queues,
    ring_size, t_back, t_dev. Returns (B, m) requests per µs.
    """
    B = P.shape[0]
    m = x.shape[0]
    out = np.empty((B, m))
    for b in range(B):
        t_cpu = P[b, 0]
        t_ring = P[b, 1]
        t_shared = P[b, 2]
        c = P[b, 3]
        t_wake = P[b, 4]
        pcpus = P[b, 5]
        vcpus = P[b, 6]
        queues = max(1.0, P[b, 7])
        ring_size = P[b, 8]
        t_back = P[b, 9]
        t_dev = P[b, 10]
        for i in range(m):
            jobs = x[i]
            n = int(np.rint(min(jobs, vcpus)))
            n = max(n, 1)
            # vCPUs beyond the physical CPUs time-share them: each runs at speed pcpus/n.
            speed = 1.0 if n <= pcpus else pcpus / n
            # jobs beyond the vCPUs sleep; a completion for a sleeping job wakes it inside
            # the completion path, with the lock that path holds (the one ring lock, or the
            # device-wide lock shared by all rings): blkif_interrupt ends requests locked.
            asleep = 0.0 if jobs <= vcpus else 1.0 - vcpus / jobs
            wake = t_wake * asleep
            svc = np.empty(n)
            if queues <= 1.0:
                # one ring, one lock: ring work and shared work serialise together
                think = t_cpu / speed
                for k in range(1, n + 1):
                    svc[k - 1] = (t_ring + t_shared) / speed + wake + c * k / 2.0
                xg, _ = birth_death(n, think, svc)
            else:
                # Q rings with their own locks; CPUs spread over rings. With at most one
                # CPU per ring the ring lock is uncontended and its work is plain CPU time;
                # only the state shared by all rings stays behind one lock.
                per_ring = n / queues
                if per_ring <= 1.0:
                    think = (t_cpu + t_ring) / speed + c / 2.0
                    for k in range(1, n + 1):
                        svc[k - 1] = t_shared / speed + wake + c * k / 2.0
                    xg, _ = birth_death(n, think, svc)
                else:
                    # several CPUs per ring: ring locks become the contended stations;
                    # approximate by the slower of ring-lock and shared-lock chains
                    nr = int(np.ceil(per_ring))
                    svr = np.empty(nr)
                    for k in range(1, nr + 1):
                        svr[k - 1] = t_ring / speed + c * k / 2.0
                    xr, _ = birth_death(nr, (t_cpu + t_shared) / speed + wake, svr)
                    for k in range(1, n + 1):
                        svc[k - 1] = t_shared / speed + wake + c * k / 2.0
                    xs, _ = birth_death(n, (t_cpu + t_ring) / speed, svc)
                    xg = min(xr * queues * per_ring / nr, xs)
            # backend thread per ring and ring slots: hard ceilings
            cap = xg
            if t_back > 0.0:
                cap = min(cap, queues / t_back)
            if t_back + t_dev > 0.0:
                cap = min(cap, queues * ring_size / (t_back + t_dev))
            out[b, i] = cap
    return out
