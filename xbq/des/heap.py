"""The event list of the twin: a binary min-heap of (time, event id, kind, actor).

Events are ordered by virtual time in nanoseconds, ties broken by the event id, a running
counter, so events scheduled for the same instant fire in the order they were scheduled
(FIFO, as SimPy's ``(time, priority, eid)``): a run is deterministic. The heap lives in four
parallel ``int64`` arrays plus a two-element counter array ``n = [size, next_eid]``, all in
the namedtuple :data:`event_heap`, so jitted code changes it in place.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from xbq._jit import kernel

event_heap = namedtuple("event_heap", ["time", "eid", "kind", "actor", "n"])
event_heap.__doc__ = """time, eid, kind, actor : int64[capacity]; n : int64[2] (size, next eid)."""


def new_heap(capacity: int) -> event_heap:
    """An empty heap for at most ``capacity`` pending events."""
    if capacity < 1:
        raise ValueError("heap capacity must be >= 1")
    z = np.zeros(capacity, np.int64)
    return event_heap(z, z.copy(), z.copy(), z.copy(), np.zeros(2, np.int64))


@kernel(inline="always")
def _less(h, i, j):
    ti = h.time[i]
    tj = h.time[j]
    return ti < tj or (ti == tj and h.eid[i] < h.eid[j])


@kernel(inline="always")
def _swap(h, i, j):
    h.time[i], h.time[j] = h.time[j], h.time[i]
    h.eid[i], h.eid[j] = h.eid[j], h.eid[i]
    h.kind[i], h.kind[j] = h.kind[j], h.kind[i]
    h.actor[i], h.actor[j] = h.actor[j], h.actor[i]


@kernel(inline="always")
def heap_push(h, time, kind, actor):
    """Schedule event ``kind`` for ``actor`` at ``time`` ns; returns False if the heap is full.

    Changes every array of ``h``.
    """
    i = h.n[0]
    if i >= h.time.size:
        return False
    h.time[i] = time
    h.eid[i] = h.n[1]
    h.kind[i] = kind
    h.actor[i] = actor
    h.n[0] = i + 1
    h.n[1] += 1
    while i > 0:
        parent = (i - 1) >> 1
        if not _less(h, i, parent):
            break
        _swap(h, i, parent)
        i = parent
    return True


@kernel(inline="always")
def heap_pop(h):
    """Remove the earliest event; return ``(time, eid, kind, actor)`` (the heap is not empty).

    Changes every array of ``h``.
    """
    t, e, k, a = h.time[0], h.eid[0], h.kind[0], h.actor[0]
    n = h.n[0] - 1
    h.n[0] = n
    if n > 0:
        h.time[0] = h.time[n]
        h.eid[0] = h.eid[n]
        h.kind[0] = h.kind[n]
        h.actor[0] = h.actor[n]
        i = 0
        while True:
            left = 2 * i + 1
            if left >= n:
                break
            c = left
            if left + 1 < n and _less(h, left + 1, left):
                c = left + 1
            if not _less(h, c, i):
                break
            _swap(h, i, c)
            i = c
    return t, e, k, a
