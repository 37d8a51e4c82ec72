"""The twin's spin locks: FIFO, spinning in virtual time, ticket or MCS hand-off.

A CPU that asks for a held lock spins on it (it can do nothing else) until the holder's
release hands it over: the next waiter gets the lock after ``handoff_base_ns`` plus, for a
ticket lock, ``handoff_per_waiter_ns`` per waiter then spinning (every waiter's cache line is
invalidated: the collapse of Boyd-Wickizer et al.); an MCS lock hands off in constant time.
``sq`` and ``mq1`` have one lock for submission and completion (``io_lock``), ``mq`` one per
ring (``ring_lock``); an optional device-wide backend lock models the 2015 RFC's shared
persistent-grant tree. Spin and hold times are charged to the CPUs in the window.
"""

from __future__ import annotations

from xbq._jit import kernel
from xbq.engines.des.cpus import phase
from xbq.engines.des.state import clip, ns


@kernel(forceinline=True)
def lock_acquire(sim, cpus, heap, locks, lockq, P, lk, cpu, t):
    """Ask for lock ``lk``; the CPU's next EV_PHASE is the grant (it spins until then)."""
    cpus[cpu].spin_since = t
    lock = locks[lk]
    if lock.holder < 0 and lock.n == 0:
        lock.holder = cpu
        phase(sim, cpus, heap, cpu, t + ns(P.lock_acquire_ns), t)
    else:
        ncpu = lockq.shape[1]
        lockq[lk, (lock.h + lock.n) % ncpu] = cpu
        lock.n += 1


@kernel(forceinline=True)
def lock_granted(sim, cpus, cpu, t):
    """The CPU has the lock it asked for: its spinning ends, its holding begins."""
    c = cpus[cpu]
    c.spin += clip(c.spin_since, t, sim.t_warm, sim.t_end)
    c.hold_since = t


@kernel(forceinline=True)
def lock_release(sim, cpus, heap, locks, lockq, P, lk, cpu, t):
    """Release ``lk``: the first waiter gets it after the hand-off time."""
    cpus[cpu].hold += clip(cpus[cpu].hold_since, t, sim.t_warm, sim.t_end)
    lock = locks[lk]
    lock.holder = -1
    k = lock.n
    if k > 0:
        nxt = lockq[lk, lock.h]
        lock.h = (lock.h + 1) % lockq.shape[1]
        lock.n = k - 1
        lock.holder = nxt
        ho = P.handoff_base_ns
        if P.lock_mcs == 0:
            ho += P.handoff_per_waiter_ns * k
        phase(sim, cpus, heap, nxt, t + ns(ho), t)
