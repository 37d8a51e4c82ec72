"""A guest on a host with fewer CPUs than busy vCPUs: the native engine's own machine.

The kit's native engine runs a guest of ``V`` vCPU threads and one dom0 vCPU thread per ring in
use on ``H`` host CPUs. When the busy threads ``A(N)`` exceed ``H``, the host shares its CPUs
among them (processor sharing): each busy thread runs a share ``H / A`` of the time, and every
I/O pays host scheduling work (switches, wake-ups, caches refilled) that is amortised over the
batch a thread finds waiting when it runs again, a batch that grows with ``A / H``. Three
bounds follow (times in µs per I/O, IOPS out):

* **host CPUs**: ``X <= min(A, H) / (t_cpu + t_sched * H / A)`` (the scheduling term only when
  ``A > H``);
* **each ring's interrupt vCPU**: it does ``t_irq`` of work per I/O of its ring (the
  completions, and the submits of its own jobs), plus ``t_wake`` for each wake-up of a task
  it must make, with a share ``min(1, H / A)`` of a CPU, so
  ``X <= r * min(1, H / A) / (t_irq + t_wake * w(N))`` for ``r`` rings in use. Wake-ups per
  I/O ``w = f + p``: ``f = 1 - r / min(N, V)``, the share of a ring's I/Os whose job runs on
  another vCPU than the interrupt (blk-mq completes a request on the CPU that submitted it,
  ``rq_affinity``; here the kick of a halted vCPU), and ``p`` the sleeps in
  ``blk_mq_get_tag`` per I/O. When the jobs want more requests than the rings have tags
  (``N * iodepth > r * T``, ``T`` tags a ring), every job sleeps once per round of the tags
  and gets ``r * T / N`` of them, so ``p = min(1, N / (r * T))``; else ``p = 0``.

``A(N) = min(N, V) + min(r, D)``: busy guest vCPUs (jobs placed round-robin, as ``xbq measure
--placement pinned``) and one busy dom0 vCPU per ring in use, ``r = ceil(min(N, V) * R / V)``
under blk-mq's contiguous queue map (``R`` rings). ``X(N)`` is the smaller bound. With one
ring (``sq``) the interrupt vCPU's share falls as ``2 / (N + 1)`` on two host CPUs; with a
ring per vCPU the rings' shares add up to one CPU, and the host's CPUs bound the rest.
"""

from __future__ import annotations

import numpy as np

from xbq.models._checks import concurrency, positive, shape_out

US_PER_S = 1e6


def busy_threads(n, vcpus, queues, dom0_vcpus):
    """``(A, r)``: busy vCPU threads (guest and dom0) and rings in use at ``n`` jobs."""
    nv = np.minimum(n, vcpus)
    r = np.ceil(nv * queues / vcpus - 1e-9)
    return nv + np.minimum(r, dom0_vcpus), r


def wakeups(n, vcpus, queues, ring_size, iodepth):
    """Wake-ups per I/O made by the rings' interrupt vCPUs: completions of jobs on other
    vCPUs plus sleeps for a tag (see the module docstring)."""
    nv = np.minimum(n, vcpus)
    r = np.ceil(nv * queues / vcpus - 1e-9)
    tags = r * ring_size
    sleeps = np.where(n * iodepth > tags, np.minimum(1.0, n / tags), 0.0)
    return 1.0 - r / nv + sleeps


def _host(n, t_cpu, t_sched, t_irq, t_wake, host_cpus, vcpus, queues, dom0_vcpus, ring_size,
          iodepth):
    a, r = busy_threads(n, vcpus, queues, dom0_vcpus)
    over = a > host_cpus
    share = np.where(over, host_cpus / a, 1.0)
    cpu = np.minimum(a, host_cpus) / (t_cpu + np.where(over, t_sched * share, 0.0))
    ring = r * share / (t_irq + t_wake * wakeups(n, vcpus, queues, ring_size, iodepth))
    return np.minimum(cpu, ring) * US_PER_S


def guest_host(n, t_cpu: float, t_sched: float, t_irq: float, t_wake: float,
               host_cpus: float, vcpus: float, queues: float, dom0_vcpus: float = 16.0,
               ring_size: float = 32.0, iodepth: float = 32.0):
    """IOPS of the guest-on-host model (see the module docstring).

    Parameters
    ----------
    n : float or array_like
        fio jobs, >= 1.
    t_cpu : float
        Host CPU time per I/O, guest and dom0 together (µs).
    t_sched : float
        Host scheduling work per I/O with one busy thread per host CPU (µs), amortised as
        ``H / A`` when ``A > H`` busy threads share the ``H`` host CPUs.
    t_irq : float
        Work per I/O on a ring's interrupt vCPU (µs).
    t_wake : float
        Work on the interrupt vCPU per wake-up of a task (µs).
    host_cpus, vcpus, queues, dom0_vcpus : float
        Host CPUs ``H``, guest vCPUs ``V``, rings ``R``, dom0 vCPUs ``D``.
    ring_size, iodepth : float
        Tags (requests) per ring ``T`` and I/Os each job keeps in flight.

    Returns
    -------
    float or numpy.ndarray
        Throughput (IOPS).
    """
    x = concurrency(n)
    for name, v in (("t_cpu", t_cpu), ("t_irq", t_irq), ("host_cpus", host_cpus),
                    ("vcpus", vcpus), ("queues", queues), ("dom0_vcpus", dom0_vcpus)):
        positive(name, v)
    positive("t_sched", t_sched, allow_zero=True)
    positive("t_wake", t_wake, allow_zero=True)
    positive("ring_size", ring_size)
    positive("iodepth", iodepth)
    return shape_out(n, _host(x, t_cpu, t_sched, t_irq, t_wake, host_cpus, vcpus, queues,
                              dom0_vcpus, ring_size, iodepth))


def host_batch(x, P):
    """Batched evaluator for the registry: ``P`` columns are the parameters in
    :data:`xbq.models.registry` order; returns IOPS ``(B, len(x))``."""
    c = [P[:, i][:, None] for i in range(P.shape[1])]
    return _host(x[None, :], *c)
