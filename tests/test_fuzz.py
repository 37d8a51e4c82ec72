"""Fuzzing the protocol core under bounds checking: a malicious frontend against blkback, a
malicious backend against blkfront, the double fetch of XSA-155, and ``xbq fuzz``.

The invariants live in :mod:`xbq.blkif.fuzz` (checked after every step); these tests drive them
with hypothesis (stateful, seeded, short) and with the seeded campaign, and show that the
checker itself fails on a broken backend.
"""

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from xbq.blkif.fuzz import (
    DATA_PAGES,
    DISK_SECTORS,
    NR_GREFS,
    OPS,
    BackendFuzz,
    FrontendFuzz,
    Violation,
    campaign,
)
from xbq.xen.abi import (
    BLKIF_OP_INDIRECT,
    BLKIF_OP_READ,
    BLKIF_OP_WRITE,
    BLKIF_RING_ENTRY_SIZE,
    BLKIF_RSP_OKAY,
    IND_OFF_INDIRECT_GREFS,
    IND_OFF_INDIRECT_OP,
    IND_OFF_NR_SEGMENTS,
    REQ_OFF_ID,
    REQ_OFF_NR_SEGMENTS,
    REQ_OFF_OPERATION,
    REQ_OFF_SECTOR_NUMBER,
    REQ_OFF_SEG,
    RSP_OFF_ID,
    SEG_SIZE,
    SRING_RING_OFFSET,
)
from xbq.xen.grant import GTF_permit_access, GTF_readonly

U32 = st.integers(0, (1 << 32) - 1)
U64 = st.integers(0, (1 << 64) - 1)


def request_bytes(op, rid, sector, nseg, segs, indirect_op=BLKIF_OP_READ, ind_grefs=()):
    raw = np.zeros(BLKIF_RING_ENTRY_SIZE, np.uint8)
    raw[REQ_OFF_OPERATION] = op
    raw[REQ_OFF_ID:REQ_OFF_ID + 8].view("<u8")[0] = rid
    raw[REQ_OFF_SECTOR_NUMBER:REQ_OFF_SECTOR_NUMBER + 8].view("<u8")[0] = sector
    if op == BLKIF_OP_INDIRECT:
        raw[IND_OFF_INDIRECT_OP] = indirect_op
        raw[IND_OFF_NR_SEGMENTS:IND_OFF_NR_SEGMENTS + 2].view("<u2")[0] = nseg
        for k, g in enumerate(ind_grefs[:8]):
            raw[IND_OFF_INDIRECT_GREFS + 4 * k:][:4].view("<u4")[0] = g
    else:
        raw[REQ_OFF_NR_SEGMENTS] = nseg & 0xFF
        for i, (gref, first, last) in enumerate(segs[:11]):
            off = REQ_OFF_SEG + i * SEG_SIZE
            raw[off:off + 4].view("<u4")[0] = gref
            raw[off + 4], raw[off + 5] = first, last
    return raw.tobytes()


seg_st = st.tuples(st.one_of(st.integers(8, NR_GREFS - 1), U32), st.integers(0, 9),
                   st.integers(0, 12))


class MaliciousFrontend(RuleBasedStateMachine):
    """Arbitrary slots, grants, descriptor pages and producer indices against blkback."""

    @initialize(persistent=st.booleans(), defer=st.booleans(), order=st.sampled_from([0, 1]),
                start=st.sampled_from([0, (1 << 32) - 3, 123456789]))
    def setup(self, persistent, defer, order, start):
        self.fz = BackendFuzz(persistent=persistent, defer=defer, order=order, start=start)
        self.pending = 0  # slots written since the last publish

    @rule(ref=st.integers(0, NR_GREFS - 1),
          flags=st.sampled_from([GTF_permit_access, GTF_permit_access | GTF_readonly, 0,
                                 0xFFFF, 2]),
          domid=st.sampled_from([0, 0, 1, 7, 0xFFFF]),
          frame=st.one_of(st.integers(0, 40), U32))
    def grant(self, ref, flags, domid, frame):
        self.fz.write_grant(ref, flags, domid, frame)

    @rule(op=st.sampled_from(OPS), rid=st.one_of(st.integers(0, 40), U64),
          sector=st.one_of(st.integers(0, DISK_SECTORS + 8), U64),
          nseg=st.integers(0, 260), segs=st.lists(seg_st, max_size=11),
          indirect_op=st.sampled_from([BLKIF_OP_READ, BLKIF_OP_WRITE, 3, 200]),
          ind_grefs=st.lists(st.one_of(st.integers(8, NR_GREFS - 1), U32), max_size=2))
    def write_request(self, op, rid, sector, nseg, segs, indirect_op, ind_grefs):
        self.fz.write_slot(self.pending, request_bytes(op, rid, sector, nseg, segs,
                                                       indirect_op, ind_grefs))
        self.pending += 1

    @rule(raw=st.binary(min_size=BLKIF_RING_ENTRY_SIZE, max_size=BLKIF_RING_ENTRY_SIZE))
    def write_raw_slot(self, raw):
        self.fz.write_slot(self.pending, raw)
        self.pending += 1

    @rule(page=st.integers(0, DATA_PAGES - 1), entries=st.lists(seg_st, max_size=40))
    def write_descriptor_page(self, page, entries):
        table = np.zeros(len(entries) * SEG_SIZE, np.uint8)
        for i, (gref, first, last) in enumerate(entries):
            table[i * SEG_SIZE:i * SEG_SIZE + 4].view("<u4")[0] = gref
            table[i * SEG_SIZE + 4], table[i * SEG_SIZE + 5] = first, last
        self.fz.write_page(page, 0, table.tobytes())

    @rule(extra=st.sampled_from([0, 0, 0, 1, 40, 1 << 31]))
    def publish_and_service(self, extra):
        self.fz.publish(self.pending + extra)
        self.pending = 0
        self.fz.service()

    @rule(value=U32)
    def set_producer_anywhere(self, value):
        self.fz.set_prod(value)
        self.pending = 0
        self.fz.service()

    @precondition(lambda self: self.fz.defer)
    @rule(count=st.integers(1, 8))
    def complete(self, count):
        self.fz.complete(count)

    def teardown(self):
        if hasattr(self, "fz"):
            self.fz.drain()


MaliciousFrontend.TestCase.settings = settings(max_examples=30, stateful_step_count=20,
                                               deadline=None, derandomize=True)
test_malicious_frontend = MaliciousFrontend.TestCase


class MaliciousBackend(RuleBasedStateMachine):
    """Arbitrary response bytes and response producers against blkfront."""

    @initialize(order=st.sampled_from([0, 1]), persistent=st.booleans())
    def setup(self, order, persistent):
        self.fz = FrontendFuzz(order=order, persistent=persistent)
        self.pending = 0

    @rule(count=st.integers(1, 70), write=st.booleans())
    def queue(self, count, write):
        self.fz.queue(count, write)

    @rule(slot_id=st.one_of(st.integers(0, 66), U64),
          op=st.sampled_from([BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_INDIRECT, 3, 255]),
          status=st.sampled_from([0, 0, -1, -2, 5, -32768]))
    def answer(self, slot_id, op, status):
        self.fz.answer(self.pending, slot_id, op, status)
        self.pending += 1

    @rule(raw=st.binary(min_size=16, max_size=16))
    def raw_response(self, raw):
        self.fz.write_response(self.pending, raw)
        self.pending += 1

    @rule(extra=st.sampled_from([0, 0, 0, 1, 65, 1 << 31]))
    def publish_and_interrupt(self, extra):
        self.fz.set_rsp_prod(self.fz.rsp_prod + self.pending + extra)
        self.pending = 0
        self.fz.interrupt()

    @rule(value=U32)
    def producer_anywhere(self, value):
        self.fz.set_rsp_prod(value)
        self.pending = 0
        self.fz.interrupt()


MaliciousBackend.TestCase.settings = settings(max_examples=30, stateful_step_count=20,
                                              deadline=None, derandomize=True)
test_malicious_backend = MaliciousBackend.TestCase


# --- the checker can fail ------------------------------------------------------------------------


def _good_read(fz, rid=5):
    ref = 20
    fz.write_grant(ref, GTF_permit_access, 0, fz.data_first)
    fz.write_slot(0, request_bytes(BLKIF_OP_READ, rid, 0, 1, [(ref, 0, 7)]))
    fz.publish(1)


def test_checker_catches_a_response_nobody_asked_for():
    fz = BackendFuzz()
    _good_read(fz)
    fz.service()
    before = fz._snapshot()
    off = SRING_RING_OFFSET + (fz.rsp_seen & (fz.nr_ents - 1)) * BLKIF_RING_ENTRY_SIZE
    fz.sring[off + RSP_OFF_ID:off + RSP_OFF_ID + 8].view("<u8")[0] = 99
    fz.be.rings[0]["rsp_prod_pvt"] += 1  # a backend that answers twice
    with pytest.raises(Violation, match="answers no consumed request"):
        fz.check(before, 0)


def test_checker_catches_a_write_outside_its_range_and_a_missing_response():
    fz = BackendFuzz()
    before = fz._snapshot()
    fz.vbd.disk[512 * 100] ^= 1  # nobody asked for this write
    with pytest.raises(Violation, match="disk sector 100 changed"):
        fz.check(before, 0)
    fz = BackendFuzz(defer=True)
    _good_read(fz)
    fz.service()
    fz.be.rings[0]["inflight"] = 0  # pretend the request finished, unanswered
    with pytest.raises(Violation, match="never answered"):
        fz.check_idle()


def test_checker_catches_guest_memory_written_outside_the_grants():
    fz = BackendFuzz()
    before = fz._snapshot()
    fz.conn.front.pages[fz.data_first + 3, 17] ^= 0xFF  # never granted
    with pytest.raises(Violation, match="never granted writable"):
        fz.check(before, 0)


# --- XSA-155: the double fetch --------------------------------------------------------------------


def test_backend_acts_only_on_its_copy_of_the_request():
    """The frontend rewrites a slot after blkback copied it: the response, the data and the
    disk follow the copy, and the rewritten slot is never consumed again."""
    fz = BackendFuzz(defer=True)
    ref = 21
    fz.write_grant(ref, GTF_permit_access, 0, fz.data_first)
    fz.conn.front.pages[fz.data_first] = 0xC3
    fz.write_slot(0, request_bytes(BLKIF_OP_WRITE, 7, 16, 1, [(ref, 0, 7)]))
    fz.publish(1)
    fz.service()  # copied, checked, grants mapped, handed to the device
    # the guest rewrites the slot: another op, id, sector and an unmapped grant
    fz.prod -= 1
    fz.write_slot(0, request_bytes(BLKIF_OP_READ, 666, 1000, 1, [(99, 0, 7)]))
    fz.prod += 1
    fz.complete(8)
    off = SRING_RING_OFFSET + ((fz.rsp_seen - 1) & (fz.nr_ents - 1)) * BLKIF_RING_ENTRY_SIZE
    assert int(fz.sring[off + RSP_OFF_ID:off + RSP_OFF_ID + 8].view("<u8")[0]) == 7
    assert fz.stats["rsp_okay"] == 1
    assert (fz.vbd.disk[16 * 512:24 * 512] == 0xC3).all()  # written where the copy said
    assert not fz.vbd.disk[1000 * 512:1008 * 512].any()
    assert fz.service() == 0  # req_cons moved on: the rewritten slot is not consumed again
    fz.drain()


def test_overflowing_response_producer_puts_blkfront_in_its_error_state():
    from xbq.blkif.blkfront import BLKIF_QUEUE_DISCONNECTED

    fz = FrontendFuzz()
    fz.queue(4, False)
    fz.set_rsp_prod(fz.nr_ents + 1)
    assert fz.interrupt() == -1 and fz.error
    assert fz.fe.queue_request(0, BLKIF_OP_READ, 0, 8, fz.buf, 99) == BLKIF_QUEUE_DISCONNECTED


def test_a_well_behaved_backend_completes_every_waiting_request():
    fz = FrontendFuzz()
    fz.queue(3, True)
    ids = sorted(int(i) for i in np.flatnonzero(fz.fe.shadow[0]["request"] >= 0))
    for k, rid in enumerate(ids):
        fz.answer(k, rid, BLKIF_OP_WRITE, BLKIF_RSP_OKAY)
    fz.set_rsp_prod(len(ids))
    assert fz.interrupt() == 3 and not fz.waiting


# --- the campaign ---------------------------------------------------------------------------------


def test_campaign_finds_no_violation_and_reaches_every_outcome():
    summary = campaign(300, seed=1, side="both")
    assert summary["violations"] == 0, summary["first_failure"]
    out = summary["outcomes"]
    for kind in ("back:rsp_okay", "back:rsp_error", "back:rsp_eopnotsupp", "back:halted",
                 "front:completed", "front:errors"):
        assert out.get(kind, 0) > 0, (kind, out)


def test_campaign_is_reproducible():
    a = campaign(40, seed=3, side="back")
    b = campaign(40, seed=3, side="back")
    assert a["outcomes"] == b["outcomes"]


def test_xbq_fuzz_command(capsys):
    from xbq.cli import main

    assert main(["fuzz", "--cases", "30", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "0 violation(s)" in out and "back:cases" in out
    with pytest.raises(SystemExit) as exc:
        main(["fuzz", "--cases", "0"])
    assert exc.value.code == 2


def test_two_requests_with_one_id_answered_out_of_order():
    """Regression (case 4398 of seed 0, found by the 100000-case campaign): two writes with
    the same id, one refused at once and one completed later by the deferred device. A
    response cannot say which request it answers; the checker must allow either's range."""
    from xbq.blkif.fuzz import Case, backend_case

    fz = backend_case(Case("back", 0, 4398, {}))
    assert not fz.outstanding and fz.stats["rsp_okay"] >= 1
