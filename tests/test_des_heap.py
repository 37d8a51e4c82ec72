"""The event heap pops in (time, scheduling order): FIFO among equal times."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from xbq.des.heap import heap_pop, heap_push, new_heap


@given(st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=200))
def test_heap_order_is_time_then_fifo(ops):
    h = new_heap(256)
    ref = []
    out, expect = [], []
    for k, (t, pop) in enumerate(ops):
        assert heap_push(h, t, 3, k)
        ref.append((t, k))
        if pop:
            tt, eid, kind, actor = heap_pop(h)
            out.append((tt, actor))
            ref.sort()
            expect.append(ref.pop(0))
            assert kind == 3
    while h.n[0] > 0:
        tt, eid, kind, actor = heap_pop(h)
        out.append((tt, actor))
    ref.sort()
    expect.extend(ref)
    assert out == expect


def test_heap_full_is_reported():
    h = new_heap(2)
    assert heap_push(h, 5, 0, 0) and heap_push(h, 1, 0, 1)
    assert not heap_push(h, 0, 0, 2)
    assert heap_pop(h)[0] == 1
    assert int(h.n[0]) == 1 and np.int64(h.n[1]) == 2
