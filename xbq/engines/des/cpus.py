"""The twin's CPUs: run queues, dispatch, context switches, and vCPUs on a pCPU pool.

Each guest or dom0 vCPU runs one task at a time, without preemption (the driver paths run
with interrupts or preemption off); a high-priority queue (guest interrupts, backend
completions) is served before a FIFO run queue of threads (fio jobs, blkback's per-ring
threads). A thread that still has work keeps its CPU until its quantum ends and another
thread waits (:func:`yield_or_continue`); starting a thread that is not the one that ran
last, or that slept, costs a context switch (:func:`switch`).

The run queues are intrusive lists (:mod:`xbq.engines.des.state`): a queued task is linked
through the ``rq_next`` of its own record (the job's, its ring's for an interrupt or a
backend thread, its slot's for a device completion).

Every step of a CPU ends with its next ``EV_STEP``, scheduled through :func:`phase`. With a
pCPU pool (``pcpus`` > 0) a runnable vCPU may have no pCPU: its pending step is then frozen
(``v_left``) and resumes when it gets one (:func:`pcpu_run`), so a preempted lock holder keeps
the lock and a waiter handed the lock while preempted takes it only when it runs again. A
vCPU's slice ends it (:func:`pcpu_slice`) when another waits; a vCPU waking from idle joins
the pool's queue at its head with credit1's BOOST (:func:`pcpu_wake`).
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.engines.des.heap import LINE_SLICE, push, push_line
from xbq.engines.des.state import (
    ACTOR_MASK,
    ERR_TWO_STEPS,
    EV_SLICE,
    EV_STEP,
    GEN_SHIFT,
    NIL,
    PH_START,
    T_BE,
    T_IRQ,
    T_JOB,
    TASK_SHIFT,
    clip,
    in_window,
    ns,
)


@kernel(forceinline=True)
def phase(tw, cpu, due, t):
    """Schedule ``cpu``'s next step at ``due`` (virtual ns); frozen while it has no pCPU."""
    c = tw.cpus[cpu]
    if c.v_due >= 0 or c.v_left >= 0:
        tw.run[0].err = ERR_TWO_STEPS  # two pending steps on one CPU: an engine bug
    if c.v_run:
        c.v_due = due
        push(tw.heap, tw.evl[0], due, np.int64(EV_STEP), cpu | (c.v_gen << GEN_SHIFT))
    else:
        c.v_left = due - t


# --- vCPUs on physical CPUs ---------------------------------------------------------------------


@kernel
def pcpu_run(tw, P, c, t):
    """vCPU ``c`` gets a pCPU at ``t``: its frozen step resumes and its time slice starts."""
    v = tw.cpus[c]
    v.v_run = 1
    v.v_rgen += 1
    left = v.v_left
    if left >= 0:
        v.v_left = -1
        phase(tw, c, t + left, t)
    push_line(tw.heap, tw.evl[0], LINE_SLICE, t + ns(P.pcpu_slice_ns), np.int64(EV_SLICE),
              c | (v.v_rgen << GEN_SHIFT))


@kernel
def pcpu_wait(tw, c, t, head):
    """vCPU ``c`` is runnable without a pCPU: join the pool's run queue (its head or tail)."""
    run = tw.run[0]
    cpus = tw.cpus
    cpus[c].v_run = 0
    cpus[c].v_wait_since = t
    if run.prq_head == NIL:
        cpus[c].prq_next = NIL
        run.prq_head = run.prq_tail = c
    elif head:
        cpus[c].prq_next = run.prq_head
        run.prq_head = c
    else:
        cpus[c].prq_next = NIL
        cpus[run.prq_tail].prq_next = c
        run.prq_tail = c


@kernel
def pcpu_next(tw, P, t):
    """A pCPU is free at ``t``: run the vCPU at the head of the run queue, or keep it free."""
    run = tw.run[0]
    c = run.prq_head
    if c != NIL:
        run.prq_head = tw.cpus[c].prq_next
        if run.prq_head == NIL:
            run.prq_tail = NIL
        tw.cpus[c].steal += clip(tw.cpus[c].v_wait_since, t, run.t_warm, run.t_end)
        pcpu_run(tw, P, c, t)
    else:
        run.pfree += 1


@kernel
def pcpu_wake(tw, P, c, t):
    """An idle vCPU has work: take a free pCPU or wait (BOOST: at the head of the queue)."""
    run = tw.run[0]
    if run.pfree > 0:
        run.pfree -= 1
        pcpu_run(tw, P, c, t)
    else:
        pcpu_wait(tw, c, t, P.pcpu_boost != 0)


@kernel
def pcpu_block(tw, P, c, t):
    """A vCPU went idle (it blocks in the hypervisor): its pCPU goes to the next in line."""
    tw.cpus[c].v_run = 0
    tw.cpus[c].v_rgen += 1  # cancels its slice event
    pcpu_next(tw, P, t)


@kernel
def pcpu_slice(tw, P, c, t):
    """vCPU ``c``'s slice ends: if another waits, preempt ``c`` (its step freezes)."""
    v = tw.cpus[c]
    if tw.run[0].prq_head == NIL:
        push_line(tw.heap, tw.evl[0], LINE_SLICE, t + ns(P.pcpu_slice_ns),
                  np.int64(EV_SLICE), c | (v.v_rgen << GEN_SHIFT))
        return
    if v.v_due >= 0:
        v.v_left = v.v_due - t
        v.v_due = -1
        v.v_gen += 1  # cancels the pending EV_STEP
    v.v_rgen += 1
    pcpu_wait(tw, c, t, False)
    pcpu_next(tw, P, t)  # the pCPU c left goes to the head of the queue


# --- run queues and dispatch ------------------------------------------------------------------


@kernel(forceinline=True)
def _next_of(tw, code):
    """The task after task ``code`` on its run queue."""
    kind = code >> TASK_SHIFT
    a = code & ACTOR_MASK
    if kind == T_JOB:
        return tw.jobs[a].rq_next
    if kind == T_IRQ:
        return tw.drings[a].irq_next
    if kind == T_BE:
        return tw.drings[a].be_next
    return tw.slots[a].rq_next


@kernel(forceinline=True)
def _set_next(tw, code, nxt):
    kind = code >> TASK_SHIFT
    a = code & ACTOR_MASK
    if kind == T_JOB:
        tw.jobs[a].rq_next = nxt
    elif kind == T_IRQ:
        tw.drings[a].irq_next = nxt
    elif kind == T_BE:
        tw.drings[a].be_next = nxt
    else:
        tw.slots[a].rq_next = nxt


@kernel(forceinline=True)
def rq_push(tw, cpu, hi, code, front):
    """Link task ``code`` into ``cpu``'s high-priority (``hi``) or thread run queue, at its
    head (``front``) or tail."""
    c = tw.cpus[cpu]
    head = c.hi_head if hi else c.lo_head
    tail = c.hi_tail if hi else c.lo_tail
    if head == NIL:
        _set_next(tw, code, NIL)
        head = tail = code
    elif front:
        _set_next(tw, code, head)
        head = code
    else:
        _set_next(tw, code, NIL)
        _set_next(tw, tail, code)
        tail = code
    if hi:
        c.hi_head, c.hi_tail = head, tail
    else:
        c.lo_head, c.lo_tail = head, tail


@kernel(forceinline=True)
def _rq_pop(tw, cpu, hi):
    c = tw.cpus[cpu]
    code = c.hi_head if hi else c.lo_head
    nxt = _next_of(tw, code)
    if hi:
        c.hi_head = nxt
        if nxt == NIL:
            c.hi_tail = NIL
    else:
        c.lo_head = nxt
        if nxt == NIL:
            c.lo_tail = NIL
    return code


@kernel(forceinline=True)
def dispatch(tw, P, cpu, t):
    """The CPU is free: start its next task, or go idle."""
    c = tw.cpus[cpu]
    run = tw.run[0]
    if c.hi_head != NIL:
        code = _rq_pop(tw, cpu, True)
    elif c.lo_head != NIL:
        code = _rq_pop(tw, cpu, False)
    else:
        c.cur = NIL
        if c.idle == 0:
            c.idle = 1
            c.idle_since = t
            c.busy += clip(c.busy_since, t, run.t_warm, run.t_end)
            if P.pcpus > 0:  # (out of line: the pool is off by default)
                pcpu_block(tw, P, cpu, t)
        return
    start = t
    if c.idle:
        c.idle = 0
        c.busy_since = t
        if cpu < tw.cfg[0].vcpus:
            poll_end = c.idle_since + ns(P.halt_poll_ns)
            if t < poll_end:  # still polling (halt_poll_ns): no wake-up, the poll was busy
                c.busy_since = c.idle_since
            else:  # blocked in Xen after its poll: woken first (vcpu_wake_ns)
                start = t + ns(P.vcpu_wake_ns)
                c.busy += clip(c.idle_since, poll_end, run.t_warm, run.t_end)
                c.busy_since = start
        if P.pcpus > 0:
            pcpu_wake(tw, P, cpu, t)
    c.cur = code
    c.phase = PH_START
    c.task_n += 1
    phase(tw, cpu, start, t)  # the task starts in its phase handler


@kernel(forceinline=True)
def enqueue(tw, P, cpu, kind, actor, hi, t):
    """Queue task ``kind``/``actor`` on ``cpu`` (its high-priority queue if ``hi``) and
    dispatch it if the CPU is free."""
    rq_push(tw, cpu, hi, (np.int64(kind) << TASK_SHIFT) | actor, False)
    if tw.cpus[cpu].cur < 0:
        dispatch(tw, P, cpu, t)


@kernel(forceinline=True)
def task_end(tw, P, cpu, t):
    """The running task ends: the CPU takes the next one."""
    tw.cpus[cpu].cur = NIL
    dispatch(tw, P, cpu, t)


@kernel(forceinline=True)
def switch(tw, P, cpu, tid, slept, t):
    """Context-switch cost of starting thread ``tid`` on ``cpu``: 0 if it is the thread that
    ran there last and has not ``slept`` since (the caller then clears its ``slept`` flag)."""
    c = tw.cpus[cpu]
    cost = 0.0
    if c.last_tid != tid or slept:
        cost = P.ctx_switch_ns
        c.last_tid = tid
        c.slice_start = t
        run = tw.run[0]
        if in_window(run, t):
            run.ctx += 1
    return cost


@kernel(forceinline=True)
def yield_or_continue(tw, P, cpu, kind, actor, t):
    """A thread with more work ends a step: keep the CPU, or requeue behind waiting work.

    Returns True if the thread keeps running (the caller starts its next step)."""
    c = tw.cpus[cpu]
    waiting = c.lo_head != NIL
    if c.hi_head == NIL and (not waiting or t - c.slice_start < P.quantum_ns):
        return True
    expired = waiting and t - c.slice_start >= P.quantum_ns
    rq_push(tw, cpu, False, (np.int64(kind) << TASK_SHIFT) | actor, not expired)
    task_end(tw, P, cpu, t)
    return False
