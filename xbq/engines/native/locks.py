"""Bounded spinlocks on shared int64 arrays: the 2015 kernel's ticket lock, TTAS, MCS and
Xen's paravirtual ticket lock.

The native engine's ``io_lock`` (legacy blkfront) and per-ring ``ring_lock`` (blk-mq blkfront)
are these locks, taken by real OS threads running ``nogil`` numba code. Three designs:

* **ticket** (``arch_spin_lock`` of x86 Linux in 2015): ``xadd`` a ticket from ``next``, wait
  until ``owner`` serves it; FIFO, every waiter spins on the same cache line.
* **ttas** (test-and-test-and-set): spin reading the lock word, ``xchg`` only when it looks
  free; unfair, cheap uncontended.
* **mcs** (Mellor-Crummey & Scott, the queue lock behind Linux's qspinlock): each waiter
  spins on its own node; the tail word holds the last waiter's node.
* **pv** (the paravirtual ticket lock of Xen guests, ``arch/x86/xen/spinlock.c`` as of
  Linux 4.x before qspinlock): a ticket lock whose waiter spins ``PV_SPIN_THRESHOLD`` times,
  then publishes ``(lock, ticket wanted)`` in its per-CPU ``lock_waiting`` slot and blocks
  (Xen's ``SCHEDOP_poll`` on its per-CPU event channel; here a futex on that slot) until the
  releasing CPU, finding a waiter registered for the ticket it now serves, kicks it
  (``xen_unlock_kick``). The guest's defence against a preempted lock holder: waiters stop
  burning the CPU the holder needs.

Unlike the kernel's (which disable preemption and may spin forever), every wait here is
**bounded**, because a user-space holder can be descheduled and CI has two cores: spin
``SPIN_BEFORE_YIELD`` times with :func:`xbq.xen.atomic.cpu_relax`, then ``sched_yield`` on each
further try, and past ``timeout_ns`` give up with :data:`LOCK_TIMEOUT`. A waiter that gives up
has abandoned its ticket or queue node, so it marks the lock *broken*; every later waiter then
fails with :data:`LOCK_BROKEN` at its first yield. The engine turns either code into an
:class:`xbq.errors.XbqError` and stops the run.

Layout: lock ``i`` occupies ``LOCK_WORDS`` (16) int64 words from ``i * LOCK_WORDS``: the first
cache line holds the lock words, the second the statistics, which only the holder writes
(plain stores, under the lock). Per-CPU lock nodes are a separate array, ``MCS_WORDS``
words per thread: the MCS queue node and the pv lock's ``lock_waiting`` slot; a thread holds
at most one lock at a time (the engine never nests locks).

Statistics per lock: acquisitions, contended acquisitions (the first try failed), total wait
of contended acquisitions in ns, the most waiters seen by an arriving thread (itself
included), yields, timeouts, and for the pv lock the waits that blocked and the kicks
that woke them.
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.errors import XbqError
from xbq.xen.atomic import (
    atomic_cas,
    atomic_fetch_add,
    atomic_load,
    atomic_store,
    atomic_xchg,
    cpu_relax,
    futex_wait,
    futex_wake,
    monotonic_ns,
    sched_yield,
)

LOCK_TICKET = 0
LOCK_TTAS = 1
LOCK_MCS = 2
LOCK_PV = 3
#: ``--lock`` names.
LOCK_KINDS = {"ticket": LOCK_TICKET, "ttas": LOCK_TTAS, "mcs": LOCK_MCS, "pv": LOCK_PV}

LOCK_WORDS = 16
# first cache line: the lock itself
LK_WORD = 0  # ticket: next ticket; ttas: 1 when held; mcs: tail node + 1 (0: free)
LK_OWNER = 1  # ticket: the ticket now served
LK_WAITERS = 2  # ttas/mcs: threads waiting now (atomic)
LK_BROKEN = 3  # set when a waiter gave up: the lock can no longer be trusted
LK_PV_WAITERS = 4  # pv: waiters registered in lock_waiting (the slow-path flag)
# second cache line: statistics
LK_ACQUIRED = 8
LK_CONTENDED = 9
LK_WAIT_NS = 10
LK_MAX_WAITERS = 11
LK_TIMEOUTS = 12  # atomic
LK_YIELDS = 13  # atomic
LK_BLOCKS = 14  # pv: waits that blocked (atomic)
LK_KICKS = 15  # pv: waiters kicked by a release (atomic)
LOCK_STATS = ("acquired", "contended", "wait_ns", "max_waiters", "timeouts", "yields",
              "blocks", "kicks")

MCS_WORDS = 8  # one cache line per node
MCS_NEXT = 0  # successor node + 1 (0: none yet)
MCS_LOCKED = 1  # 1 while the owner of this node must wait
PV_WAITING = 2  # pv: this CPU's lock_waiting slot, pv_entry(lock, ticket) while blocked

LOCK_OK = 0
LOCK_TIMEOUT = -1
LOCK_BROKEN = -2

#: Pause-spins before a waiter starts yielding the CPU.
SPIN_BEFORE_YIELD = 128
#: Spins of a pv waiter before it blocks: the kernel's ``SPIN_THRESHOLD`` (1 << 15).
PV_SPIN_THRESHOLD = 1 << 15
#: Longest single futex sleep of a blocked pv waiter (ns) before it rechecks its deadline.
PV_POLL_NS = 10_000_000
#: Default time a waiter may wait before giving up (ns).
DEFAULT_TIMEOUT_NS = 5_000_000_000


def lock_kind(name: str) -> int:
    """Return the kind code for a ``--lock`` name; ``XbqError`` for an unknown one."""
    if name not in LOCK_KINDS:
        raise XbqError(f"unknown lock {name!r}; choose from {', '.join(LOCK_KINDS)}")
    return LOCK_KINDS[name]


def _aligned_zeros(n: int, align: int = 128) -> np.ndarray:
    raw = np.zeros(n + align // 8, np.int64)
    start = ((-raw.ctypes.data) % align) // 8
    return raw[start:start + n]


def new_locks(n: int) -> np.ndarray:
    """Return ``n`` free locks: an int64 array of ``n * LOCK_WORDS`` words, 128-byte aligned."""
    if n < 1:
        raise ValueError("need at least one lock")
    return _aligned_zeros(n * LOCK_WORDS)


def new_mcs_nodes(nr_threads: int) -> np.ndarray:
    """Return MCS queue nodes for threads ``0 .. nr_threads - 1`` (one cache line each)."""
    return _aligned_zeros(max(nr_threads, 1) * MCS_WORDS)


def lock_stats(locks: np.ndarray, i: int) -> dict[str, int]:
    """Return lock ``i``'s statistics by name (see :data:`LOCK_STATS`)."""
    b = i * LOCK_WORDS
    return {name: int(locks[b + LK_ACQUIRED + k]) for k, name in enumerate(LOCK_STATS)}


# --- the bounded wait -------------------------------------------------------------------------


@kernel(forceinline=True)
def _wait_step(lk, b, k, t0, timeout_ns):
    """One wait iteration ``k``: pause, or yield and check the deadline and the broken mark."""
    if k < SPIN_BEFORE_YIELD:
        cpu_relax()
        return LOCK_OK
    sched_yield()
    atomic_fetch_add(lk, b + LK_YIELDS, 1)
    if atomic_load(lk, b + LK_BROKEN) != 0:
        return LOCK_BROKEN
    if monotonic_ns() - t0 > timeout_ns:
        return LOCK_TIMEOUT
    return LOCK_OK


@kernel
def _give_up(lk, b, status):
    atomic_store(lk, b + LK_BROKEN, 1)
    atomic_fetch_add(lk, b + LK_TIMEOUTS, 1)
    return status


@kernel(forceinline=True)
def _account(lk, b, contended, t0, waiters):
    """Statistics, written by the new holder (so plain stores suffice)."""
    lk[b + LK_ACQUIRED] += 1
    if contended:
        lk[b + LK_CONTENDED] += 1
        lk[b + LK_WAIT_NS] += monotonic_ns() - t0
        if waiters > lk[b + LK_MAX_WAITERS]:
            lk[b + LK_MAX_WAITERS] = waiters


# --- ticket lock (x86 arch_spin_lock, 2015) -----------------------------------------------------


@kernel(forceinline=True)
def _take_ticket(lk, b):
    """``xadd`` a ticket from ``next``; returns it and the ticket ``owner`` serves now. An
    uncontended take (the two equal) is counted here."""
    me = atomic_fetch_add(lk, b + LK_WORD, 1)
    owner = atomic_load(lk, b + LK_OWNER)
    if owner == me:
        _account(lk, b, False, 0, 0)
    return me, owner


@kernel
def ticket_lock(lk, i, timeout_ns):
    """Take ticket lock ``i``: ``xadd`` a ticket, wait for ``owner`` to reach it.

    Returns ``LOCK_OK``, ``LOCK_TIMEOUT`` or ``LOCK_BROKEN``. Changes ``lk``.
    """
    b = i * LOCK_WORDS
    me, owner = _take_ticket(lk, b)
    if owner == me:
        return LOCK_OK
    t0 = monotonic_ns()
    k = 0
    while atomic_load(lk, b + LK_OWNER) != me:
        st = _wait_step(lk, b, k, t0, timeout_ns)
        if st != LOCK_OK:
            return _give_up(lk, b, st)
        k += 1
    _account(lk, b, True, t0, me - owner)
    return LOCK_OK


@kernel
def ticket_unlock(lk, i):
    """Release ticket lock ``i``: serve the next ticket (a release store)."""
    b = i * LOCK_WORDS
    atomic_store(lk, b + LK_OWNER, lk[b + LK_OWNER] + 1)
    return LOCK_OK


# --- test-and-test-and-set --------------------------------------------------------------------


@kernel
def ttas_lock(lk, i, timeout_ns):
    """Take TTAS lock ``i``: read until free, then ``xchg``; returns a ``LOCK_*`` code."""
    b = i * LOCK_WORDS
    if atomic_load(lk, b + LK_WORD) == 0 and atomic_xchg(lk, b + LK_WORD, 1) == 0:
        _account(lk, b, False, 0, 0)
        return LOCK_OK
    waiters = atomic_fetch_add(lk, b + LK_WAITERS, 1) + 1
    t0 = monotonic_ns()
    k = 0
    while True:
        if atomic_load(lk, b + LK_WORD) == 0 and atomic_xchg(lk, b + LK_WORD, 1) == 0:
            break
        st = _wait_step(lk, b, k, t0, timeout_ns)
        if st != LOCK_OK:
            atomic_fetch_add(lk, b + LK_WAITERS, -1)
            return _give_up(lk, b, st)
        k += 1
    atomic_fetch_add(lk, b + LK_WAITERS, -1)
    _account(lk, b, True, t0, waiters)
    return LOCK_OK


@kernel
def ttas_unlock(lk, i):
    """Release TTAS lock ``i`` (a release store of 0)."""
    atomic_store(lk, i * LOCK_WORDS + LK_WORD, 0)
    return LOCK_OK


# --- MCS queue lock ---------------------------------------------------------------------------


@kernel
def mcs_lock(lk, i, nodes, me, timeout_ns):
    """Take MCS lock ``i`` with thread ``me``'s node: swap the tail, link, spin on own node."""
    b = i * LOCK_WORDS
    nb = me * MCS_WORDS
    atomic_store(nodes, nb + MCS_NEXT, 0)
    atomic_store(nodes, nb + MCS_LOCKED, 1)
    pred = atomic_xchg(lk, b + LK_WORD, me + 1)
    if pred == 0:
        _account(lk, b, False, 0, 0)
        return LOCK_OK
    waiters = atomic_fetch_add(lk, b + LK_WAITERS, 1) + 1
    atomic_store(nodes, (pred - 1) * MCS_WORDS + MCS_NEXT, me + 1)
    t0 = monotonic_ns()
    k = 0
    while atomic_load(nodes, nb + MCS_LOCKED) != 0:
        st = _wait_step(lk, b, k, t0, timeout_ns)
        if st != LOCK_OK:
            atomic_fetch_add(lk, b + LK_WAITERS, -1)
            return _give_up(lk, b, st)
        k += 1
    atomic_fetch_add(lk, b + LK_WAITERS, -1)
    _account(lk, b, True, t0, waiters)
    return LOCK_OK


@kernel
def mcs_unlock(lk, i, nodes, me, timeout_ns):
    """Release MCS lock ``i``: free it if nobody queued, else hand it to the successor.

    A successor that swapped the tail but has not linked itself yet is waited for (bounded);
    returns a ``LOCK_*`` code.
    """
    b = i * LOCK_WORDS
    nb = me * MCS_WORDS
    nxt = atomic_load(nodes, nb + MCS_NEXT)
    if nxt == 0:
        if atomic_cas(lk, b + LK_WORD, me + 1, 0) == me + 1:
            return LOCK_OK
        t0 = monotonic_ns()
        k = 0
        while True:
            nxt = atomic_load(nodes, nb + MCS_NEXT)
            if nxt != 0:
                break
            st = _wait_step(lk, b, k, t0, timeout_ns)
            if st != LOCK_OK:
                return _give_up(lk, b, st)
            k += 1
    atomic_store(nodes, (nxt - 1) * MCS_WORDS + MCS_LOCKED, 0)
    return LOCK_OK


# --- Xen's paravirtual ticket lock --------------------------------------------------------------


@kernel(forceinline=True)
def pv_entry(i, ticket):
    """The ``lock_waiting`` value of a CPU blocked on lock ``i`` for ``ticket``: the lock in
    the high half, the ticket in the low half with its lowest bit set, so that the futex
    word (the low half) never reads as zero and a kick (which clears the slot) changes it."""
    return (np.int64(i + 1) << 32) | (((np.int64(ticket) & 0x7FFFFFFF) << 1) | 1)


@kernel
def _pv_block(lk, b, nodes, nb, entry, t0, timeout_ns):
    """Sleep until a release kicks this CPU (clears its slot); ``LOCK_*`` code."""
    atomic_fetch_add(lk, b + LK_BLOCKS, 1)
    while atomic_load(nodes, nb + PV_WAITING) == entry:
        left = timeout_ns - (monotonic_ns() - t0)
        if left <= 0 or atomic_load(lk, b + LK_BROKEN) != 0:
            if atomic_cas(nodes, nb + PV_WAITING, entry, 0) == entry:
                return LOCK_BROKEN if left > 0 else LOCK_TIMEOUT
            break  # kicked at the last moment
        futex_wait(nodes, nb + PV_WAITING, entry & 0xFFFFFFFF, min(left, PV_POLL_NS))
    return LOCK_OK


@kernel
def pv_lock(lk, i, nodes, me, timeout_ns, spin_threshold):
    """Take pv ticket lock ``i`` as CPU ``me``: spin ``spin_threshold`` times, then block
    until kicked (``xen_lock_spinning``), and spin again; returns a ``LOCK_*`` code.

    The waiter publishes its slot, then rechecks the lock (both full barriers) before it
    sleeps; the releaser serves the next ticket, then reads the waiter count and the slots
    (full barriers too), so one of the two always sees the other: no wake-up is lost.
    """
    b = i * LOCK_WORDS
    nb = me * MCS_WORDS
    me_t, owner = _take_ticket(lk, b)
    if owner == me_t:
        return LOCK_OK
    t0 = monotonic_ns()
    entry = pv_entry(i, me_t)
    while True:
        for _ in range(spin_threshold):
            if atomic_load(lk, b + LK_OWNER) == me_t:
                _account(lk, b, True, t0, me_t - owner)
                return LOCK_OK
            cpu_relax()
        atomic_fetch_add(lk, b + LK_PV_WAITERS, 1)
        atomic_xchg(nodes, nb + PV_WAITING, entry)
        if atomic_load(lk, b + LK_OWNER) == me_t:
            atomic_cas(nodes, nb + PV_WAITING, entry, 0)  # a kick may have cleared it first
            st = LOCK_OK
        else:
            st = _pv_block(lk, b, nodes, nb, entry, t0, timeout_ns)
        atomic_fetch_add(lk, b + LK_PV_WAITERS, -1)
        if st != LOCK_OK:
            return _give_up(lk, b, st)
        if atomic_load(lk, b + LK_OWNER) == me_t:
            _account(lk, b, True, t0, me_t - owner)
            return LOCK_OK


@kernel
def pv_unlock(lk, i, nodes):
    """Release pv ticket lock ``i``: serve the next ticket, then kick the CPU registered as
    waiting for it, if any (``__ticket_unlock_kick`` / ``xen_unlock_kick``)."""
    b = i * LOCK_WORDS
    nxt = atomic_fetch_add(lk, b + LK_OWNER, 1) + 1  # a full barrier, unlike a plain release
    if atomic_load(lk, b + LK_PV_WAITERS) == 0:
        return LOCK_OK
    entry = pv_entry(i, nxt)
    for c in range(nodes.size // MCS_WORDS):
        slot = c * MCS_WORDS + PV_WAITING
        if atomic_load(nodes, slot) == entry:
            if atomic_cas(nodes, slot, entry, 0) == entry:
                atomic_fetch_add(lk, b + LK_KICKS, 1)
                futex_wake(nodes, slot, 1)
            break
    return LOCK_OK


# --- one entry point for the engine -------------------------------------------------------------


@kernel
def spin_lock(lk, i, kind, nodes, me, timeout_ns):
    """Take lock ``i`` of kind ``kind`` as thread ``me``; returns ``LOCK_OK`` or an error code.

    Parameters
    ----------
    lk : int64[:]
        The locks (:func:`new_locks`).
    i : int
        Lock index.
    kind : int
        ``LOCK_TICKET``, ``LOCK_TTAS``, ``LOCK_MCS`` or ``LOCK_PV``.
    nodes : int64[:]
        Per-CPU lock nodes (:func:`new_mcs_nodes`); unused by ticket and TTAS.
    me : int
        The calling thread's index (its node).
    timeout_ns : int
        Longest wait before giving up (ns).
    """
    if kind == LOCK_TICKET:
        return ticket_lock(lk, i, timeout_ns)
    if kind == LOCK_TTAS:
        return ttas_lock(lk, i, timeout_ns)
    if kind == LOCK_PV:
        return pv_lock(lk, i, nodes, me, timeout_ns, PV_SPIN_THRESHOLD)
    return mcs_lock(lk, i, nodes, me, timeout_ns)


@kernel
def spin_unlock(lk, i, kind, nodes, me, timeout_ns):
    """Release lock ``i`` taken by :func:`spin_lock`; returns ``LOCK_OK`` or an error code."""
    if kind == LOCK_TICKET:
        return ticket_unlock(lk, i)
    if kind == LOCK_TTAS:
        return ttas_unlock(lk, i)
    if kind == LOCK_PV:
        return pv_unlock(lk, i, nodes)
    return mcs_unlock(lk, i, nodes, me, timeout_ns)
