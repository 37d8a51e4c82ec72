"""The event list of the twin: a binary min-heap of (time, event id, kind, actor), a
next-event slot, and delay lines.

Events are ordered by virtual time in nanoseconds, ties broken by the event id, a running
counter, so events scheduled for the same instant fire in the order they were scheduled
(FIFO, as SimPy's ``(time, priority, eid)``): a run is deterministic. Pending events live in
three places, and :func:`heap_pop` takes the earliest of them, so the order is exactly that
of one heap:

* the heap: rows ``[0, heap_cap)`` of one ``int64[rows, 4]`` array (columns :data:`H_TIME`,
  :data:`H_EID`, :data:`H_KIND`, :data:`H_ACTOR`); entries move down or up through a hole
  (one copy per level, not a swap);
* the next-event slot (``hot_*`` of the run's record): an event scheduled before everything
  in the heap (a CPU's next step at the current instant, typically) waits there and never
  enters the heap;
* delay lines (:func:`push_line`): an event due a fixed delay after the current instant (a
  pCPU slice, a null-device completion, a backend wake-up) goes to the tail of its line,
  rows after the heap's. As virtual time never goes back, each line is sorted by
  construction (a FIFO), so these events, many of them far in the future, never make the
  heap deeper. An event that would break a line's order, or finds it full, goes to the heap.

The sizes, heads and next event id are fields of the event list's own record
(:data:`EVL_DTYPE`); this module imports nothing of the twin but :mod:`xbq._jit`. An insert
that finds no room sets ``full``: the loop stops the run with its error.
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel

H_TIME, H_EID, H_KIND, H_ACTOR = range(4)
#: Delay lines: the end of a pCPU slice, a null-device completion, a backend thread's wake-up.
LINE_SLICE, LINE_DEV, LINE_WAKE = range(3)
NR_LINES = 3

#: The event list's scalars: the heap's size and capacity, the next event id, the
#: next-event slot (full?, the event's time, id, kind and actor), the delay lines' capacity,
#: heads and lengths, and whether an insert found no room.
EVL_DTYPE = np.dtype([
    ("heap_n", "<i8"), ("heap_cap", "<i8"), ("next_eid", "<i8"), ("hot_n", "<i8"),
    ("hot_t", "<i8"), ("hot_e", "<i8"), ("hot_k", "<i8"), ("hot_a", "<i8"), ("dl_cap", "<i8"),
    ("dl_h", "<i8", NR_LINES), ("dl_n", "<i8", NR_LINES), ("full", "<i8"),
], align=True)


def new_event_list(capacity: int, line_capacity: int | None = None):
    """``(evl, heap)``: the event list's record and its rows, for at most ``capacity``
    events in the heap (plus ``line_capacity``, default ``capacity``, in each delay line)."""
    if capacity < 1:
        raise ValueError("heap capacity must be >= 1")
    lines = capacity if line_capacity is None else line_capacity
    evl = np.zeros(1, EVL_DTYPE)
    evl["heap_cap"] = capacity
    evl["dl_cap"] = lines
    return evl, np.zeros((capacity + NR_LINES * lines, 4), np.int64)


@kernel(forceinline=True)
def _before(t, e, heap, j):
    """Event ``(t, e)`` comes before row ``j``: earlier, or as early and older."""
    tj = heap[j, H_TIME]
    return t < tj or (t == tj and e < heap[j, H_EID])


@kernel(forceinline=True)
def _put(heap, i, t, e, k, a):
    heap[i, H_TIME] = t
    heap[i, H_EID] = e
    heap[i, H_KIND] = k
    heap[i, H_ACTOR] = a


@kernel(forceinline=True)
def _sift_up(heap, i, t, e, k, a):
    """Place event ``(t, e, k, a)`` at hole ``i`` or above it (moving parents down)."""
    while i > 0:
        parent = (i - 1) >> 1
        if not _before(t, e, heap, parent):
            break
        for c in range(4):
            heap[i, c] = heap[parent, c]
        i = parent
    _put(heap, i, t, e, k, a)


@kernel(forceinline=True)
def _heap_insert(heap, evl, t, e, k, a):
    if evl.heap_n >= evl.heap_cap:
        return False
    _sift_up(heap, evl.heap_n, t, e, k, a)
    evl.heap_n += 1
    return True


@kernel(forceinline=True)
def heap_push(heap, evl, time, kind, actor):
    """Schedule event ``kind`` for ``actor`` at ``time`` ns; False if the heap is full.

    Changes ``heap``, ``evl.heap_n``, ``evl.hot_*``, ``evl.next_eid``.
    """
    e = evl.next_eid
    if evl.hot_n:
        if time < evl.hot_t:  # the new one is first: the old next event joins the heap
            if not _heap_insert(heap, evl, evl.hot_t, evl.hot_e, evl.hot_k, evl.hot_a):
                return False
            evl.hot_t, evl.hot_e, evl.hot_k, evl.hot_a = time, e, kind, actor
        elif not _heap_insert(heap, evl, time, e, kind, actor):
            return False
    elif evl.heap_n == 0 or _before(time, e, heap, 0):
        evl.hot_n = 1
        evl.hot_t, evl.hot_e, evl.hot_k, evl.hot_a = time, e, kind, actor
    elif not _heap_insert(heap, evl, time, e, kind, actor):
        return False
    evl.next_eid = e + 1
    return True


@kernel(forceinline=True)
def line_push(heap, evl, line, time, kind, actor):
    """Append an event to delay line ``line`` if it keeps the line sorted and fits, else
    schedule it as any other (:func:`heap_push`). False if nothing had room."""
    n = evl.dl_n[line]
    cap = evl.dl_cap
    if n < cap:
        base = evl.heap_cap + line * cap
        h = evl.dl_h[line]
        if n == 0 or time >= heap[base + (h + n - 1) % cap, H_TIME]:
            _put(heap, base + (h + n) % cap, time, evl.next_eid, kind, actor)
            evl.dl_n[line] = n + 1
            evl.next_eid += 1
            return True
    return heap_push(heap, evl, time, kind, actor)


@kernel(forceinline=True)
def _heap_remove_top(heap, evl):
    n = evl.heap_n - 1
    evl.heap_n = n
    if n > 0:  # move the last entry down from the root's hole
        lt, le, lk, la = heap[n, H_TIME], heap[n, H_EID], heap[n, H_KIND], heap[n, H_ACTOR]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            if c + 1 < n and _before(heap[c + 1, H_TIME], heap[c + 1, H_EID], heap, c):
                c += 1
            if _before(lt, le, heap, c):  # event ids are unique: never equal
                break
            for col in range(4):
                heap[i, col] = heap[c, col]
            i = c
        _put(heap, i, lt, le, lk, la)


@kernel(forceinline=True)
def heap_pop(heap, evl):
    """Remove the earliest pending event; return ``(time, eid, kind, actor)`` (one is
    pending). Changes ``heap``, ``evl.heap_n``, ``evl.hot_n``, ``evl.dl_*``."""
    # the candidate rows: -1 the next-event slot, 0 the heap's root, else a line's head
    best = -2
    bt = np.int64(0)
    be = np.int64(0)
    if evl.hot_n:
        best, bt, be = -1, evl.hot_t, evl.hot_e
    elif evl.heap_n:
        best, bt, be = 0, heap[0, H_TIME], heap[0, H_EID]
    cap = evl.dl_cap
    for line in range(NR_LINES):
        if evl.dl_n[line]:
            row = evl.heap_cap + line * cap + evl.dl_h[line]
            t, e = heap[row, H_TIME], heap[row, H_EID]
            if best == -2 or t < bt or (t == bt and e < be):
                best, bt, be = evl.heap_cap + line, t, e
    if best == -1:
        evl.hot_n = 0
        return evl.hot_t, evl.hot_e, evl.hot_k, evl.hot_a
    if best == 0:
        k, a = heap[0, H_KIND], heap[0, H_ACTOR]
        _heap_remove_top(heap, evl)
        return bt, be, k, a
    line = best - evl.heap_cap
    row = evl.heap_cap + line * cap + evl.dl_h[line]
    evl.dl_h[line] = (evl.dl_h[line] + 1) % cap
    evl.dl_n[line] -= 1
    return bt, be, heap[row, H_KIND], heap[row, H_ACTOR]


@kernel(forceinline=True)
def pending(evl):
    """Events waiting: in the heap, the next-event slot and the delay lines."""
    n = evl.heap_n + evl.hot_n
    for line in range(NR_LINES):
        n += evl.dl_n[line]
    return n


@kernel(forceinline=True)
def push(heap, evl, t, kind, actor):
    """Schedule an event; a full heap sets ``full`` (the loop stops the run)."""
    if not heap_push(heap, evl, t, kind, actor):
        evl.full = 1


@kernel(forceinline=True)
def push_line(heap, evl, line, t, kind, actor):
    """Schedule an event due a fixed delay after now on delay line ``line`` (or the heap)."""
    if not line_push(heap, evl, line, t, kind, actor):
        evl.full = 1
