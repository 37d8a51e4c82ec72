"""The twin's processes: a CPU's due step goes to the handler of the task it runs.

Four tasks run on the CPUs, each stepping through the real protocol code and charging its
cost: the fio job (:mod:`xbq.engines.des.jobs`), the guest interrupt
(:mod:`xbq.engines.des.irq`), and blkback's per-ring thread and the device's completions
(:mod:`xbq.engines.des.backend`). A task code is ``kind << TASK_SHIFT | actor``: the job,
the ring, or the ring slot it concerns.
"""

from __future__ import annotations

from xbq._jit import kernel
from xbq.engines.des.backend import be_step, done_step
from xbq.engines.des.irq import irq_step
from xbq.engines.des.jobs import job_step
from xbq.engines.des.state import ACTOR_MASK, T_BE, T_IRQ, T_JOB, TASK_SHIFT


@kernel(forceinline=True)
def step(tw, io, P, cpu, t):
    """The CPU's pending step is due at ``t``: run it (its task's handler, by phase)."""
    c = tw.cpus[cpu]
    kind = c.cur >> TASK_SHIFT
    a = c.cur & ACTOR_MASK
    if kind == T_JOB:
        job_step(tw, io, P, cpu, a, c.phase, t)
    elif kind == T_IRQ:
        irq_step(tw, io, P, cpu, a, c.phase, t)
    elif kind == T_BE:
        be_step(tw, io, P, cpu, a, c.phase, t)
    else:
        done_step(tw, io, P, cpu, a, c.phase, t)
