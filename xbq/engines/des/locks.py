"""The twin's spin locks: FIFO, spinning in virtual time, ticket or MCS hand-off.

A CPU that asks for a held lock spins on it (it can do nothing else) until the holder's
release hands it over: the next waiter gets the lock after ``handoff_base_ns`` plus, for a
ticket lock, ``handoff_per_waiter_ns`` per waiter then spinning (every waiter's cache line is
invalidated: the collapse of Boyd-Wickizer et al.); an MCS lock hands off in constant time.
``sq`` and ``mq1`` have one lock for submission and completion (``io_lock``), ``mq`` one per
ring (``ring_lock``); an optional device-wide backend lock models the 2015 RFC's shared
persistent-grant tree. Spin and hold times are charged to the CPUs in the window. A lock's
waiters are linked through the CPUs' ``lock_next`` (a CPU spins on one lock at a time).
"""

from __future__ import annotations

from xbq._jit import kernel
from xbq.engines.des.cpus import phase
from xbq.engines.des.state import NIL, clip, ns


@kernel(forceinline=True)
def spin_lock(tw, P, lk, cpu, t):
    """Ask for lock ``lk``; the CPU's next EV_STEP is the grant (it spins until then)."""
    tw.cpus[cpu].spin_since = t
    lock = tw.locks[lk]
    if lock.holder < 0 and lock.n == 0:
        lock.holder = cpu
        phase(tw, cpu, t + ns(P.lock_acquire_ns), t)
    else:
        tw.cpus[cpu].lock_next = NIL
        if lock.n == 0:
            lock.head = cpu
        else:
            tw.cpus[lock.tail].lock_next = cpu
        lock.tail = cpu
        lock.n += 1


@kernel(forceinline=True)
def lock_granted(tw, cpu, t):
    """The CPU has the lock it asked for: its spinning ends, its holding begins."""
    c = tw.cpus[cpu]
    run = tw.run[0]
    c.spin += clip(c.spin_since, t, run.t_warm, run.t_end)
    c.hold_since = t


@kernel(forceinline=True)
def spin_unlock(tw, P, lk, cpu, t):
    """Release ``lk``: the first waiter gets it after the hand-off time."""
    run = tw.run[0]
    tw.cpus[cpu].hold += clip(tw.cpus[cpu].hold_since, t, run.t_warm, run.t_end)
    lock = tw.locks[lk]
    lock.holder = NIL
    k = lock.n
    if k > 0:
        nxt = lock.head
        lock.head = tw.cpus[nxt].lock_next
        lock.n = k - 1
        if lock.n == 0:
            lock.tail = NIL
        lock.holder = nxt
        ho = P.handoff_base_ns
        if P.lock_mcs == 0:
            ho += P.handoff_per_waiter_ns * k
        phase(tw, nxt, t + ns(ho), t)
