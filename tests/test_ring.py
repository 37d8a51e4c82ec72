"""ring.h macros on the byte buffer: layout, wrap-around at 2**32, and a stateful
frontend/backend model checking exactly-once delivery, no overwritten slot and no lost wake-up."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from xbq.xen import ring as R
from xbq.xen.abi import BLKIF_RING_ENTRY_SIZE, REQ_OFF_ID, RSP_OFF_ID, ring_size, sring_bytes
from xbq.xen.memory import MASK32, get_u64, put_u64
from xbq.xen.ring import (
    REQ_EVENT,
    REQ_PROD,
    RSP_EVENT,
    RSP_PROD,
    attach_back_ring,
    sring_get,
    sring_header,
    sring_set,
)


class Ring:
    """A shared page and one side's private indices: ring.h's front or back ring."""

    def __init__(self, sring, pvt):
        self.sring, self.pvt = sring, pvt


def new_front_ring(order):
    return Ring(*R.new_front_ring(order))


# The macros, called as ring.h's are: on the front or back ring (page and private indices).

def RING_FREE_REQUESTS(r, *args):
    return R.RING_FREE_REQUESTS(r.pvt[0], *args)


def RING_FULL(r, *args):
    return R.RING_FULL(r.pvt[0], *args)


def RING_GET_REQUEST(r, *args):
    return R.RING_GET_REQUEST(r.pvt[0], *args)


def RING_REQUEST_CONS_OVERFLOW(r, *args):
    return R.RING_REQUEST_CONS_OVERFLOW(r.pvt[0], *args)


def RING_REQUEST_PROD_OVERFLOW(r, *args):
    return R.RING_REQUEST_PROD_OVERFLOW(r.pvt[0], *args)


def RING_RESPONSE_PROD_OVERFLOW(r, *args):
    return R.RING_RESPONSE_PROD_OVERFLOW(r.pvt[0], *args)


def RING_HAS_UNCONSUMED_REQUESTS(r, *args):
    return R.RING_HAS_UNCONSUMED_REQUESTS(r.sring, r.pvt[0], *args)


def RING_HAS_UNCONSUMED_RESPONSES(r, *args):
    return R.RING_HAS_UNCONSUMED_RESPONSES(r.sring, r.pvt[0], *args)


def RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(r, *args):
    return R.RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(r.sring, r.pvt[0], *args)


def RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(r, *args):
    return R.RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(r.sring, r.pvt[0], *args)


def RING_FINAL_CHECK_FOR_REQUESTS(r, *args):
    return R.RING_FINAL_CHECK_FOR_REQUESTS(r.sring, r.pvt[0], *args)


def RING_FINAL_CHECK_FOR_RESPONSES(r, *args):
    return R.RING_FINAL_CHECK_FOR_RESPONSES(r.sring, r.pvt[0], *args)


def RING_COPY_REQUEST(r, *args):
    return R.RING_COPY_REQUEST(r.sring, r.pvt[0], *args)


def RING_COPY_RESPONSE(r, *args):
    return R.RING_COPY_RESPONSE(r.sring, r.pvt[0], *args)


NEAR_WRAP = (1 << 32) - 3


def rings_at(order, start):
    """A front and a back ring on one page with every index started at ``start``."""
    fr = new_front_ring(order)
    fr.pvt[0]["req_prod_pvt"] = start
    fr.pvt[0]["rsp_cons"] = start
    sring_set(fr.sring, REQ_PROD, start)
    sring_set(fr.sring, RSP_PROD, start)
    sring_set(fr.sring, REQ_EVENT, start + 1)
    sring_set(fr.sring, RSP_EVENT, start + 1)
    return fr, Ring(fr.sring, attach_back_ring(fr.sring, start))


@pytest.mark.parametrize("order", range(5))
def test_init_and_slot_layout(order):
    fr = new_front_ring(order)
    assert fr.sring.size == sring_bytes(order) == 4096 << order
    assert sring_header(fr.sring) == {"req_prod": 0, "req_event": 1, "rsp_prod": 0, "rsp_event": 1}
    n = ring_size(order)
    assert RING_FREE_REQUESTS(fr) == n and not RING_FULL(fr)
    assert RING_GET_REQUEST(fr, 0) == 64
    assert RING_GET_REQUEST(fr, n) == 64  # slots are indices modulo the ring size
    last = RING_GET_REQUEST(fr, n - 1)
    assert last == 64 + (n - 1) * BLKIF_RING_ENTRY_SIZE
    assert last + BLKIF_RING_ENTRY_SIZE <= fr.sring.size


@pytest.mark.parametrize("start", [0, NEAR_WRAP, (1 << 32) - 1])
def test_counts_across_the_wrap(start):
    fr, br = rings_at(0, start)
    n = ring_size(0)
    for k in range(n):
        assert RING_FREE_REQUESTS(fr) == n - k
        fr.pvt[0]["req_prod_pvt"] = (start + k + 1) & MASK32
    assert RING_FULL(fr)
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(fr)
    assert sring_get(fr.sring, REQ_PROD) == (start + n) & MASK32
    assert RING_HAS_UNCONSUMED_REQUESTS(br) == n
    br.pvt[0]["req_cons"] = (start + 5) & MASK32
    assert RING_HAS_UNCONSUMED_REQUESTS(br) == n - 5
    assert not RING_REQUEST_CONS_OVERFLOW(br, (start + 5) & MASK32)
    # responses to 5 requests, then the frontend sees 5 unconsumed responses
    br.pvt[0]["rsp_prod_pvt"] = (start + 5) & MASK32
    RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(br)
    assert RING_HAS_UNCONSUMED_RESPONSES(fr) == 5
    fr.pvt[0]["rsp_cons"] = (start + 5) & MASK32
    assert RING_FREE_REQUESTS(fr) == 5


@pytest.mark.parametrize("start", [0, NEAR_WRAP])
def test_overflow_checks(start):
    fr, br = rings_at(0, start)
    n = ring_size(0)
    assert not RING_REQUEST_PROD_OVERFLOW(br, (start + n) & MASK32)
    assert RING_REQUEST_PROD_OVERFLOW(br, (start + n + 1) & MASK32)
    assert RING_REQUEST_PROD_OVERFLOW(br, (start - 1) & MASK32)  # behind the consumer: bogus
    assert not RING_RESPONSE_PROD_OVERFLOW(fr, (start + n) & MASK32)
    assert RING_RESPONSE_PROD_OVERFLOW(fr, (start + n + 1) & MASK32)
    assert RING_REQUEST_CONS_OVERFLOW(br, (start + n) & MASK32)
    assert not RING_REQUEST_CONS_OVERFLOW(br, (start + n - 1) & MASK32)
    # an inflated req_prod cannot make the backend consume more than it has response slots for
    sring_set(fr.sring, REQ_PROD, (start + 10 * n) & MASK32)
    assert RING_HAS_UNCONSUMED_REQUESTS(br) == n


@given(old=st.integers(0, MASK32), count=st.integers(0, 64), event_delta=st.integers(-70, 70))
def test_push_notifies_iff_event_in_window(old, count, event_delta):
    """notify <=> req_event lies in (old, new], computed the long way on unbounded integers."""
    fr, _ = rings_at(0, old)
    event = (old + event_delta) & MASK32
    sring_set(fr.sring, REQ_EVENT, event)
    fr.pvt[0]["req_prod_pvt"] = (old + count) & MASK32
    notify = RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(fr)
    assert notify == (1 <= event_delta <= count)


@pytest.mark.parametrize("start", [0, NEAR_WRAP])
def test_final_check_arms_event(start):
    fr, br = rings_at(0, start)
    assert RING_FINAL_CHECK_FOR_REQUESTS(br) == 0
    assert sring_get(fr.sring, REQ_EVENT) == (start + 1) & MASK32
    fr.pvt[0]["req_prod_pvt"] = (start + 1) & MASK32
    assert RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(fr)  # the sleeper is woken
    assert RING_FINAL_CHECK_FOR_RESPONSES(fr) == 0
    assert sring_get(fr.sring, RSP_EVENT) == (start + 1) & MASK32
    # the final check finds work published before it: no sleep, no change needed
    br.pvt[0]["rsp_prod_pvt"] = (start + 1) & MASK32
    RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(br)
    assert RING_FINAL_CHECK_FOR_RESPONSES(fr) == 1


class RingMachine(RuleBasedStateMachine):
    """A frontend and a backend on one ring, interleaved at random.

    Requests carry a unique id in their slot; responses echo it. The backend consumes in
    order with RING_COPY_REQUEST; the frontend checks the ids of responses. Either side may
    go to sleep only through its FINAL_CHECK, and is then woken only by a notification.
    """

    @initialize(order=st.integers(0, 2), start=st.sampled_from([0, 1000, NEAR_WRAP, MASK32]))
    def setup(self, order, start):
        self.fr, self.br = rings_at(order, start)
        self.n = ring_size(order)
        self.next_id = 1
        self.produced = []        # ids in the order they were put on the ring
        self.consumed = []        # ids the backend read, in order
        self.to_answer = []       # consumed, not yet answered (FIFO)
        self.answered = []        # ids whose response the frontend read
        self.back_asleep = False
        self.front_asleep = False
        self.buf = np.zeros(BLKIF_RING_ENTRY_SIZE, np.uint8)

    @rule(k=st.integers(1, 8))
    def front_queue(self, k):
        for _ in range(k):
            if RING_FULL(self.fr):
                return
            p = self.fr.pvt[0]
            put_u64(self.fr.sring, RING_GET_REQUEST(self.fr, int(p["req_prod_pvt"])) + REQ_OFF_ID,
                    self.next_id)
            p["req_prod_pvt"] = (int(p["req_prod_pvt"]) + 1) & MASK32
            self.produced.append(self.next_id)
            self.next_id += 1

    @rule()
    def front_push(self):
        pvt = int(self.fr.pvt[0]["req_prod_pvt"])
        published = (pvt - sring_get(self.fr.sring, REQ_PROD)) & MASK32
        notify = RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(self.fr)
        if self.back_asleep and published:
            assert notify, "lost wake-up: the backend sleeps and new requests did not notify it"
        if notify:
            self.back_asleep = False

    @precondition(lambda self: not self.back_asleep)
    @rule(k=st.integers(1, 8))
    def back_consume(self, k):
        p = self.br.pvt[0]
        for _ in range(k):
            if not RING_HAS_UNCONSUMED_REQUESTS(self.br):
                return
            cons = int(p["req_cons"])
            assert not RING_REQUEST_CONS_OVERFLOW(self.br, cons)
            RING_COPY_REQUEST(self.br, cons, self.buf)
            p["req_cons"] = (cons + 1) & MASK32
            rid = int(get_u64(self.buf, REQ_OFF_ID))
            assert rid == self.produced[len(self.consumed)], "request slot overwritten or reordered"
            self.consumed.append(rid)
            self.to_answer.append(rid)

    @precondition(lambda self: not self.back_asleep)
    @rule(k=st.integers(1, 8), push=st.booleans())
    def back_respond(self, k, push):
        p = self.br.pvt[0]
        for _ in range(min(k, len(self.to_answer))):
            rid = self.to_answer.pop(0)
            off = RING_GET_REQUEST(self.br, int(p["rsp_prod_pvt"]))
            put_u64(self.br.sring, off + RSP_OFF_ID, rid)
            p["rsp_prod_pvt"] = (int(p["rsp_prod_pvt"]) + 1) & MASK32
        if push:
            self._back_push()

    def _back_push(self):
        pvt = int(self.br.pvt[0]["rsp_prod_pvt"])
        published = (pvt - sring_get(self.br.sring, RSP_PROD)) & MASK32
        notify = RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(self.br)
        if self.front_asleep and published:
            assert notify, "lost wake-up: the frontend sleeps and new responses did not notify it"
        if notify:
            self.front_asleep = False

    @precondition(lambda self: not self.back_asleep and not self.to_answer)
    @rule()
    def back_sleep(self):
        """blkback's loop end: answered everything it consumed; final check, sleep if idle."""
        self._back_push()
        if RING_FINAL_CHECK_FOR_REQUESTS(self.br) == 0:
            self.back_asleep = True

    @precondition(lambda self: not self.front_asleep)
    @rule()
    def front_complete(self):
        """blkif_interrupt: consume every response, then the final check (sleep if idle)."""
        p = self.fr.pvt[0]
        while True:
            rp = sring_get(self.fr.sring, RSP_PROD)
            assert not RING_RESPONSE_PROD_OVERFLOW(self.fr, rp)
            i = int(p["rsp_cons"])
            while i != rp:
                RING_COPY_RESPONSE(self.fr, i, self.buf)
                rid = int(get_u64(self.buf, RSP_OFF_ID))
                assert rid == self.consumed[len(self.answered)], "response slot overwritten"
                self.answered.append(rid)
                i = (i + 1) & MASK32
            p["rsp_cons"] = i
            if not RING_FINAL_CHECK_FOR_RESPONSES(self.fr):
                break
        if len(self.answered) == len(self.consumed) == len(self.produced):
            self.front_asleep = True  # nothing outstanding that it could be waiting for

    @invariant()
    def in_flight_bounded(self):
        p = self.fr.pvt[0]
        outstanding = (int(p["req_prod_pvt"]) - int(p["rsp_cons"])) & MASK32
        assert outstanding == len(self.produced) - len(self.answered) <= self.n
        assert len(set(self.answered)) == len(self.answered)  # each id answered at most once

    def teardown(self):
        """Drain: with both sides honest, every request gets exactly one response."""
        if not hasattr(self, "fr"):
            return
        for _ in range(4 * self.n + 4):
            self.front_push()
            self.back_asleep = False
            self.back_consume(self.n)
            self.back_respond(self.n, True)
            self.front_asleep = False
            self.front_complete()
        assert self.answered == self.produced


TestRingMachine = RingMachine.TestCase
