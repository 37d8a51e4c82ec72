"""The event list pops in (time, scheduling order), FIFO among equal times, wherever an event
waits: the heap, the next-event slot or a delay line."""

from hypothesis import given, settings
from hypothesis import strategies as st

from xbq.engines.des.heap import NR_LINES, heap_pop, heap_push, line_push, new_event_list, pending


def _new(capacity, lines=None):
    evl, heap = new_event_list(capacity, lines)
    return evl, evl[0], heap


def _drain(heap, s, out):
    while pending(s) > 0:
        t, _, _, actor = heap_pop(heap, s)
        out.append((t, actor))


@given(st.lists(st.tuples(st.integers(0, 20), st.booleans()), min_size=1, max_size=200))
def test_heap_order_is_time_then_fifo(ops):
    sim, s, h = _new(256)
    ref, out, expect = [], [], []
    for k, (t, pop) in enumerate(ops):
        assert heap_push(h, s, t, 3, k)
        ref.append((t, k))
        if pop:
            tt, eid, kind, actor = heap_pop(h, s)
            out.append((tt, actor))
            ref.sort()
            expect.append(ref.pop(0))
            assert kind == 3 and eid == actor
    _drain(h, s, out)
    assert out == expect + sorted(ref)


#: One step of a run: pop the next event, schedule at now + d, or on line l (its fixed delay).
_STEP = st.one_of(st.just(("pop",)),
                  st.tuples(st.just("push"), st.integers(0, 30)),
                  st.tuples(st.just("line"), st.integers(0, NR_LINES - 1)))


@settings(max_examples=300, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=300),
       st.lists(st.integers(0, 40), min_size=NR_LINES, max_size=NR_LINES),
       st.integers(1, 8))
def test_delay_lines_keep_the_order_of_one_heap(steps, delays, line_cap):
    """Virtual time never goes back, as in the twin; a line that is full, or whose order a
    push would break (never, with a fixed delay), sends the event to the heap."""
    sim, s, h = _new(512, line_cap)
    now, ref = 0, []
    for k, step in enumerate(steps):
        if step[0] == "pop":
            if pending(s) == 0:
                continue
            now, _, _, actor = heap_pop(h, s)
            ref.sort()
            assert ref.pop(0) == (now, actor)  # the earliest, the oldest of equal times
            continue
        t = now + (step[1] if step[0] == "push" else delays[step[1]])
        if step[0] == "push":
            assert heap_push(h, s, t, 0, k)
        else:
            assert line_push(h, s, step[1], t, 0, k)
        ref.append((t, k))
    assert pending(s) == len(ref)
    out = []
    _drain(h, s, out)
    assert out == sorted(ref)


def test_a_line_push_out_of_order_goes_to_the_heap():
    sim, s, h = _new(8, 2)
    assert line_push(h, s, 0, 10, 0, 0) and line_push(h, s, 0, 5, 0, 1)  # 5 < 10: heap
    assert line_push(h, s, 0, 10, 0, 2) and line_push(h, s, 0, 11, 0, 3)  # full: heap
    assert s["dl_n"][0] == 2 and pending(s) == 4
    out = []
    _drain(h, s, out)
    assert out == [(5, 1), (10, 0), (10, 2), (11, 3)]


def test_heap_full_is_reported():
    sim, s, h = _new(2, 1)  # two in the array, one in the next-event slot, one per line
    assert heap_push(h, s, 5, 0, 0) and heap_push(h, s, 1, 0, 1) and heap_push(h, s, 3, 0, 2)
    assert not heap_push(h, s, 0, 0, 3) and not heap_push(h, s, 9, 0, 4)
    assert line_push(h, s, 1, 7, 0, 5) and not line_push(h, s, 1, 8, 0, 6)
    assert [heap_pop(h, s)[0] for _ in range(4)] == [1, 3, 5, 7]
    assert pending(s) == 0 and s["next_eid"] == 4
