"""The twin's CPUs: run queues, dispatch, context switches, and vCPUs on a pCPU pool.

Each guest or dom0 vCPU runs one task at a time, without preemption (the driver paths run
with interrupts or preemption off); a high-priority queue (guest interrupts, backend
completions) is served before a FIFO run queue of threads (fio jobs, blkback's per-ring
threads). A thread that still has work keeps its CPU until its quantum ends and another
thread waits (:func:`yield_or_continue`); starting a thread that is not the one that ran
last, or that slept, costs a context switch (:func:`switch`).

Every step of a CPU ends with its next ``EV_PHASE``, scheduled through :func:`phase`. With a
pCPU pool (``pcpus`` > 0) a runnable vCPU may have no pCPU: its pending step is then frozen
(``v_left``) and resumes when it gets one (:func:`pcpu_run`), so a preempted lock holder keeps
the lock and a waiter handed the lock while preempted takes it only when it runs again. A
vCPU's slice ends it (:func:`pcpu_slice`) when another waits; a vCPU waking from idle joins
the pool's queue at its head with credit1's BOOST (:func:`pcpu_wake`).
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.engines.des.heap import push, push_line
from xbq.engines.des.state import (
    ERR_TWO_STEPS,
    EV_PHASE,
    EV_SLICE,
    GEN_SHIFT,
    LINE_SLICE,
    PH_START,
    TASK_SHIFT,
    clip,
    ns,
)

HI, LO = 0, 1  # a CPU's two run queues in ``runq``


@kernel(forceinline=True)
def phase(sim, cpus, heap, cpu, due, t):
    """Schedule ``cpu``'s next step at ``due`` (virtual ns); frozen while it has no pCPU."""
    c = cpus[cpu]
    if c.v_due >= 0 or c.v_left >= 0:
        sim.acc_err = ERR_TWO_STEPS  # two pending steps on one CPU: an engine bug
    if c.v_run:
        c.v_due = due
        push(heap, sim, due, np.int64(EV_PHASE), cpu | (c.v_gen << GEN_SHIFT))
    else:
        c.v_left = due - t


# --- vCPUs on physical CPUs ---------------------------------------------------------------------


@kernel(forceinline=True)
def pcpu_run(sim, cpus, heap, P, c, t):
    """vCPU ``c`` gets a pCPU at ``t``: its frozen step resumes and its time slice starts."""
    v = cpus[c]
    v.v_run = 1
    v.v_rgen += 1
    left = v.v_left
    if left >= 0:
        v.v_left = -1
        phase(sim, cpus, heap, c, t + left, t)
    push_line(heap, sim, LINE_SLICE, t + ns(P.pcpu_slice_ns), np.int64(EV_SLICE),
              c | (v.v_rgen << GEN_SHIFT))


@kernel(forceinline=True)
def pcpu_wait(sim, cpus, prq, c, t, head):
    """vCPU ``c`` is runnable without a pCPU: join the run queue (its head or tail)."""
    cpus[c].v_run = 0
    cpus[c].v_wait_since = t
    cap = prq.shape[0]
    if head:
        sim.prq_h = (sim.prq_h - 1) % cap
        prq[sim.prq_h] = c
    else:
        prq[(sim.prq_h + sim.prq_n) % cap] = c
    sim.prq_n += 1


@kernel(forceinline=True)
def pcpu_next(sim, cpus, prq, heap, P, t):
    """A pCPU is free at ``t``: run the vCPU at the head of the run queue, or keep it free."""
    if sim.prq_n > 0:
        c = prq[sim.prq_h]
        sim.prq_h = (sim.prq_h + 1) % prq.shape[0]
        sim.prq_n -= 1
        cpus[c].steal += clip(cpus[c].v_wait_since, t, sim.t_warm, sim.t_end)
        pcpu_run(sim, cpus, heap, P, c, t)
    else:
        sim.pfree += 1


@kernel(forceinline=True)
def pcpu_wake(sim, cpus, prq, heap, P, c, t):
    """An idle vCPU has work: take a free pCPU or wait (BOOST: at the head of the queue)."""
    if sim.pfree > 0:
        sim.pfree -= 1
        pcpu_run(sim, cpus, heap, P, c, t)
    else:
        pcpu_wait(sim, cpus, prq, c, t, P.pcpu_boost != 0)


@kernel(forceinline=True)
def pcpu_block(sim, cpus, prq, heap, P, c, t):
    """A vCPU went idle (it blocks in the hypervisor): its pCPU goes to the next in line."""
    cpus[c].v_run = 0
    cpus[c].v_rgen += 1  # cancels its slice event
    pcpu_next(sim, cpus, prq, heap, P, t)


@kernel(forceinline=True)
def pcpu_slice(sim, cpus, prq, heap, P, c, t):
    """vCPU ``c``'s slice ends: if another waits, preempt ``c`` (its step freezes)."""
    v = cpus[c]
    if sim.prq_n == 0:
        push_line(heap, sim, LINE_SLICE, t + ns(P.pcpu_slice_ns), np.int64(EV_SLICE),
                  c | (v.v_rgen << GEN_SHIFT))
        return
    if v.v_due >= 0:
        v.v_left = v.v_due - t
        v.v_due = -1
        v.v_gen += 1  # cancels the pending EV_PHASE
    v.v_rgen += 1
    pcpu_wait(sim, cpus, prq, c, t, False)
    pcpu_next(sim, cpus, prq, heap, P, t)  # the pCPU c left goes to the head of the queue


# --- run queues and dispatch ------------------------------------------------------------------


@kernel(forceinline=True)
def _q_push(cpus, runq, cpu, which, code, front):
    c = cpus[cpu]
    q = runq[cpu, which]
    cap = q.size
    h = c.hi_h if which == HI else c.lo_h
    n = c.hi_n if which == HI else c.lo_n
    if front:
        h = (h - 1) % cap
        q[h] = code
    else:
        q[(h + n) % cap] = code
    if which == HI:
        c.hi_h = h
        c.hi_n = n + 1
    else:
        c.lo_h = h
        c.lo_n = n + 1


@kernel(forceinline=True)
def _q_pop(cpus, runq, cpu, which):
    c = cpus[cpu]
    q = runq[cpu, which]
    h = c.hi_h if which == HI else c.lo_h
    code = q[h]
    if which == HI:
        c.hi_h = (h + 1) % q.size
        c.hi_n -= 1
    else:
        c.lo_h = (h + 1) % q.size
        c.lo_n -= 1
    return code


@kernel(forceinline=True)
def dispatch(sim, cpus, runq, prq, heap, P, cpu, t):
    """The CPU is free: start its next task, or go idle."""
    c = cpus[cpu]
    if c.hi_n > 0:
        code = _q_pop(cpus, runq, cpu, HI)
    elif c.lo_n > 0:
        code = _q_pop(cpus, runq, cpu, LO)
    else:
        c.cur = -1
        if c.idle == 0:
            c.idle = 1
            c.busy += clip(c.busy_since, t, sim.t_warm, sim.t_end)
            if P.pcpus > 0:  # (out of line: the pool is off by default)
                pcpu_block(sim, cpus, prq, heap, P, cpu, t)
        return
    start = t
    if c.idle:
        c.idle = 0
        if cpu < sim.vcpus:  # a guest vCPU blocked in Xen is woken first (vcpu_wake_ns)
            start = t + ns(P.vcpu_wake_ns)
        c.busy_since = start
        if P.pcpus > 0:
            pcpu_wake(sim, cpus, prq, heap, P, cpu, t)
    c.cur = code
    c.phase = PH_START
    c.task_n += 1
    phase(sim, cpus, heap, cpu, start, t)  # the task starts in its phase handler


@kernel(forceinline=True)
def enqueue(sim, cpus, runq, prq, heap, P, cpu, kind, actor, hi, front, t):
    """Queue task ``kind``/``actor`` on ``cpu`` (its high-priority queue if ``hi``, at the
    front if ``front``) and dispatch it if the CPU is free."""
    code = (np.int64(kind) << TASK_SHIFT) | actor
    _q_push(cpus, runq, cpu, HI if hi else LO, code, front)
    if cpus[cpu].cur < 0:
        dispatch(sim, cpus, runq, prq, heap, P, cpu, t)


@kernel(forceinline=True)
def task_end(sim, cpus, runq, prq, heap, P, cpu, t):
    """The running task ends: the CPU takes the next one."""
    cpus[cpu].cur = -1
    dispatch(sim, cpus, runq, prq, heap, P, cpu, t)


@kernel(forceinline=True)
def switch(sim, cpus, P, cpu, tid, slept, t):
    """Context-switch cost of starting thread ``tid`` on ``cpu``: 0 if it is the thread that
    ran there last and has not ``slept`` since (the caller then clears its ``slept`` flag)."""
    c = cpus[cpu]
    cost = 0.0
    if c.last_tid != tid or slept:
        cost = P.ctx_switch_ns
        c.last_tid = tid
        c.slice_start = t
        sim.acc_ctx += 1.0 if t >= sim.t_warm and not sim.draining else 0.0
    return cost


@kernel(forceinline=True)
def yield_or_continue(sim, cpus, runq, prq, heap, P, cpu, kind, actor, t):
    """A thread with more work ends a step: keep the CPU, or requeue behind waiting work.

    Returns True if the thread keeps running (the caller starts its next step)."""
    c = cpus[cpu]
    if c.hi_n == 0 and (c.lo_n == 0 or t - c.slice_start < P.quantum_ns):
        return True
    expired = c.lo_n > 0 and t - c.slice_start >= P.quantum_ns
    code = (np.int64(kind) << TASK_SHIFT) | actor
    _q_push(cpus, runq, cpu, LO, code, not expired)
    task_end(sim, cpus, runq, prq, heap, P, cpu, t)
    return False
