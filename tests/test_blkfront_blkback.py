"""blkfront and blkback end to end through the real ring, grants and event channels, and the
backend's answer to every malformed request a malicious frontend can put on the ring."""

import numpy as np
import pytest
from helpers import connected_pair, pack_request

from xbq.blkif.blkback import EACCES, new_blkback
from xbq.blkif.blkfront import BLKIF_QUEUE_BUSY, BLKIF_QUEUE_DISCONNECTED, new_blkfront
from xbq.blkif.negotiate import negotiate
from xbq.blkif.vbd import new_vbd
from xbq.errors import XbqError
from xbq.xen.abi import (
    BLKIF_OP_DISCARD,
    BLKIF_OP_FLUSH_DISKCACHE,
    BLKIF_OP_INDIRECT,
    BLKIF_OP_READ,
    BLKIF_OP_WRITE,
    BLKIF_RSP_EOPNOTSUPP,
    BLKIF_RSP_ERROR,
    BLKIF_RSP_OKAY,
    IND_OFF_INDIRECT_GREFS,
    IND_OFF_INDIRECT_OP,
    IND_OFF_NR_SEGMENTS,
    REQ_OFF_ID,
    REQ_OFF_OPERATION,
    RSP_OFF_ID,
    RSP_OFF_OPERATION,
    RSP_OFF_STATUS,
    SEG_OFF_FIRST_SECT,
    SEG_OFF_LAST_SECT,
    SEG_SIZE,
)
from xbq.xen.grant import DOMID_BACKEND
from xbq.xen.memory import MASK32, get_i16, get_u8, get_u64, put_u8, put_u16, put_u32, put_u64
from xbq.xen.ring import REQ_PROD, RSP_PROD, sring_get, sring_set

DISK_SECTORS = 1 << 16


def connect(queues=1, order=0, persistent=True, indirect=True, readonly=False):
    conn = negotiate(vcpus=max(queues, 1), max_queues=queues, max_ring_page_order=order,
                     feature_persistent=persistent,
                     backend_max_indirect_segments=256 if indirect else 0,
                     sectors=DISK_SECTORS, readonly=readonly)
    assert conn.connected, conn.error
    return conn


def devices(conn, kind="ramdisk", readonly=False):
    fi = new_blkfront(conn)
    be = new_blkback(conn, new_vbd(kind, DISK_SECTORS, readonly=readonly))
    return fi, be


def io(fi, be, r, op, pfn, sector, nsect, tag):
    """Queue one I/O (split at max_sectors), let the backend serve it, complete it."""
    done = []
    maxs = fi.max_sectors
    while nsect > 0:
        n = min(nsect, maxs)
        rid = fi.queue_request(r, op, sector, n, pfn, tag)
        assert rid >= 0, rid
        fi.flush_requests(r)
        assert be.do_block_io_op(r) == 0
        k, tags, statuses = fi.interrupt(r)
        done += list(zip(tags[:k], statuses[:k], strict=True))
        sector, pfn, nsect = sector + n, pfn + n // 8, nsect - n
    return done


@pytest.mark.parametrize("persistent", [True, False])
@pytest.mark.parametrize("indirect", [True, False])
@pytest.mark.parametrize("order", [0, 2])
def test_data_round_trip_through_grants(persistent, indirect, order):
    conn = connect(queues=2, order=order, persistent=persistent, indirect=indirect)
    fi, be = devices(conn)
    npages = 32  # 128 KiB: several requests without indirect descriptors
    src, dst = conn.front.alloc_pages(npages), conn.front.alloc_pages(npages)
    data = np.random.default_rng(7).integers(0, 256, (npages, 4096), dtype=np.uint8)
    conn.front.pages[src:src + npages] = data
    for r in range(2):
        sector = 4096 + r * 1024
        done = io(fi, be, r, BLKIF_OP_WRITE, src, sector, npages * 8, 100 + r)
        assert done and all(t == 100 + r and s == BLKIF_RSP_OKAY for t, s in done)
        conn.front.pages[dst:dst + npages] = 0
        done = io(fi, be, r, BLKIF_OP_READ, dst, sector, npages * 8, 200 + r)
        assert all(t == 200 + r and s == BLKIF_RSP_OKAY for t, s in done)
        np.testing.assert_array_equal(conn.front.pages[dst:dst + npages], data)
    fs, bs = fi.stats(), be.stats()
    assert fs["requests"] == fs["responses"] == bs["responses"] == bs["requests"]
    assert bs["errors"] == 0
    assert (fs["indirect_requests"] > 0) == indirect
    if persistent:
        assert bs["persistent_hits"] > 0 and bs["unmap_ops"] == 0
    else:
        assert bs["persistent_hits"] == 0 and bs["map_ops"] == bs["unmap_ops"] > 0
        pins = int(conn.front.active["pin"].sum())  # the hypervisor's view: only the ring
        assert pins == conn.nr_rings << conn.ring_page_order  # pages stay mapped


def test_partial_page_segments_move_only_their_sectors():
    conn = connect(indirect=False)
    fi, be = devices(conn)
    page = conn.front.alloc_pages(1)
    conn.front.pages[page] = 0xEE
    io(fi, be, 0, BLKIF_OP_WRITE, page, 0, 8, 1)  # the whole page to sectors 0..7
    conn.front.pages[page] = 0x11
    io(fi, be, 0, BLKIF_OP_WRITE, page, 3, 1, 2)  # one sector
    conn.front.pages[page] = 0
    io(fi, be, 0, BLKIF_OP_READ, page, 0, 8, 3)
    expect = np.full(4096, 0xEE, np.uint8)
    expect[3 * 512:4 * 512] = 0x11
    np.testing.assert_array_equal(conn.front.pages[page], expect)


def test_ring_full_is_busy_not_an_error():
    conn = connect(indirect=False)
    fi, _ = devices(conn)
    page = conn.front.alloc_pages(1)
    n = conn.nr_ents
    ids = [fi.queue_request(0, BLKIF_OP_READ, 8 * k, 8, page, k) for k in range(n)]
    assert sorted(ids) == list(range(n))
    assert fi.queue_request(0, BLKIF_OP_READ, 0, 8, page, 99) == BLKIF_QUEUE_BUSY


def test_notifications_are_batched_by_the_event_indices():
    """One notification wakes the sleeping backend; requests pushed while it works do not."""
    conn = connect(indirect=False)
    fi, be = devices(conn, kind="null")
    page = conn.front.alloc_pages(1)
    for k in range(8):
        fi.queue_request(0, BLKIF_OP_READ, 8 * k, 8, page, k)
    assert fi.flush_requests(0)  # the backend armed req_event at 1: notified
    for k in range(8, 16):
        fi.queue_request(0, BLKIF_OP_READ, 8 * k, 8, page, k)
    assert not fi.flush_requests(0)  # the backend has not slept since: no notification
    assert be.do_block_io_op(0) == 0
    assert be.stats()["notify"] == 1  # one notification for the 16 responses
    n, tags, _ = fi.interrupt(0)
    assert n == 16
    assert sorted(tags) == list(range(16))


# --- a malicious frontend ---------------------------------------------------------------------


class Evil:
    """A frontend that writes raw bytes into ring 0 and reads raw responses."""

    def __init__(self, readonly_disk=False, persistent=True, kind="ramdisk"):
        self.conn = connect(persistent=persistent)
        self.be = new_blkback(self.conn, new_vbd(kind, DISK_SECTORS, readonly=readonly_disk))
        self.sring = self.conn.rings[0].sring
        self.page = self.conn.front.alloc_pages(4)
        self.gref = self.conn.front.grant(DOMID_BACKEND, self.page)
        self.prod = sring_get(self.sring, REQ_PROD)
        self.cons = 0

    def slot(self):
        off = 64 + (self.prod % self.conn.nr_ents) * 112  # RING_GET_REQUEST's arithmetic
        self.sring[off:off + 112] = 0
        return off

    def request(self, op=BLKIF_OP_READ, nseg=1, id=42, sector=0, segs=None):
        pack_request(self.sring, self.slot(), op=op, id=id, sector=sector, nseg=nseg,
                     segs=segs or [(self.gref, 0, 7)] * min(nseg, 11))
        return self.push()

    def indirect(self, real_op=BLKIF_OP_READ, nseg=16, id=43, ind_gref=None, seg_last=7):
        ind_page = self.page + 1
        table = self.conn.front.pages[ind_page]
        for i in range(nseg if nseg <= 512 else 0):
            put_u32(table, i * SEG_SIZE, self.gref)
            put_u8(table, i * SEG_SIZE + SEG_OFF_FIRST_SECT, 0)
            put_u8(table, i * SEG_SIZE + SEG_OFF_LAST_SECT, seg_last)
        # writable, as blkfront grants it: blkback maps persistent grants writable
        gref = self.conn.front.grant(DOMID_BACKEND, ind_page) if ind_gref is None else ind_gref
        pack_request(self.sring, self.slot(), op=BLKIF_OP_INDIRECT, id=id, nseg=nseg,
                     indirect_op=real_op, indirect_grefs=[gref])
        return self.push()

    def discard(self, sector, nr_sects, id=44):
        pack_request(self.sring, self.slot(), op=BLKIF_OP_DISCARD, id=id, sector=sector,
                     nr_sectors=nr_sects)
        return self.push()

    def push(self):
        self.prod = (self.prod + 1) & MASK32
        sring_set(self.sring, REQ_PROD, self.prod)
        rc = self.be.do_block_io_op(0)
        return rc, self.responses()

    def responses(self):
        out = []
        rp = sring_get(self.sring, RSP_PROD)
        while self.cons != rp:
            off = 64 + (self.cons % self.conn.nr_ents) * 112
            out.append((int(get_u64(self.sring, off + RSP_OFF_ID)),
                        int(get_u8(self.sring, off + RSP_OFF_OPERATION)),
                        int(get_i16(self.sring, off + RSP_OFF_STATUS))))
            self.cons = (self.cons + 1) & MASK32
        return out


BAD_RW = {
    "zero segments": dict(nseg=0),
    "twelve segments": dict(nseg=12, segs=[(0, 0, 7)] * 11),
    "first_sect > last_sect": dict(segs=[(None, 5, 4)]),
    "last_sect > 7": dict(segs=[(None, 0, 8)]),
    "sector beyond the device": dict(sector=DISK_SECTORS - 7),
    "huge sector (wraps)": dict(sector=(1 << 64) - 4),
    "grant ref out of range": dict(segs=[(0xFFFFFFF0, 0, 7)]),
    "grant never granted": dict(segs=[(5, 0, 7)]),
}


@pytest.mark.parametrize("case", sorted(BAD_RW))
@pytest.mark.parametrize("persistent", [True, False])
def test_invalid_rw_gets_one_error_response(case, persistent):
    evil = Evil(persistent=persistent)
    kw = dict(BAD_RW[case])
    if "segs" in kw:
        kw["segs"] = [(evil.gref if g is None else g, f, la) for g, f, la in kw["segs"]]
    rc, rsps = evil.request(**kw)
    assert rc == 0
    assert rsps == [(42, BLKIF_OP_READ, BLKIF_RSP_ERROR)]
    # the ring keeps working: a good request after the bad one succeeds
    rc, rsps = evil.request(id=7)
    assert rsps == [(7, BLKIF_OP_READ, BLKIF_RSP_OKAY)]
    bs = evil.be.stats()
    assert bs["requests"] == bs["responses"] == 2 and bs["errors"] == 1


def test_unknown_operation_gets_eopnotsupp():
    evil = Evil()
    for op in (4, 7, 200):
        _, rsps = evil.request(op=op, id=op)
        assert rsps == [(op, op, BLKIF_RSP_EOPNOTSUPP)]


def test_write_to_readonly_disk_is_refused():
    evil = Evil(readonly_disk=True)
    _, rsps = evil.request(op=BLKIF_OP_WRITE)
    assert rsps == [(42, BLKIF_OP_WRITE, BLKIF_RSP_ERROR)]
    _, rsps = evil.discard(0, 8)
    assert rsps == [(44, BLKIF_OP_DISCARD, BLKIF_RSP_ERROR)]


def test_read_into_readonly_grant_is_refused():
    """A read makes the backend write the guest's page: a read-only grant cannot be mapped."""
    evil = Evil(persistent=False)
    ro = evil.conn.front.grant(DOMID_BACKEND, evil.page + 2, readonly=True)
    _, rsps = evil.request(segs=[(ro, 0, 7)])
    assert rsps == [(42, BLKIF_OP_READ, BLKIF_RSP_ERROR)]
    _, rsps = evil.request(op=BLKIF_OP_WRITE, segs=[(ro, 0, 7)], id=9)  # reading it is fine
    assert rsps == [(9, BLKIF_OP_WRITE, BLKIF_RSP_OKAY)]


@pytest.mark.parametrize("case", ["bad indirect_op", "too many segments", "zero segments",
                                  "bad indirect gref", "bad segment in the table"])
def test_invalid_indirect_requests(case):
    evil = Evil()
    kw = {"bad indirect_op": dict(real_op=BLKIF_OP_FLUSH_DISKCACHE),
          "too many segments": dict(nseg=257),
          "zero segments": dict(nseg=0),
          "bad indirect gref": dict(ind_gref=0xFFFFFF00),
          "bad segment in the table": dict(seg_last=9)}[case]
    _, rsps = evil.indirect(**kw)
    assert len(rsps) == 1 and rsps[0][0] == 43 and rsps[0][2] == BLKIF_RSP_ERROR
    _, rsps = evil.indirect(id=44)
    assert rsps == [(44, BLKIF_OP_READ, BLKIF_RSP_OKAY)]


def test_discard_range_checked():
    evil = Evil()
    assert evil.discard(0, 64)[1] == [(44, BLKIF_OP_DISCARD, BLKIF_RSP_OKAY)]
    assert evil.discard(DISK_SECTORS - 8, 64)[1] == [(44, BLKIF_OP_DISCARD, BLKIF_RSP_ERROR)]


def test_bogus_producer_index_halts_only_that_ring():
    conn = connect(queues=2)
    fi, be = devices(conn, kind="null")
    n = conn.nr_ents
    sring = conn.rings[0].sring
    sring_set(sring, REQ_PROD, n + 1)  # more requests than the ring holds
    assert be.do_block_io_op(0) == -EACCES
    assert sring_get(sring, RSP_PROD) == 0  # nothing answered from a bogus ring
    assert be.do_block_io_op(0) == -EACCES  # halted for good
    assert be.stats()["bogus"] == 1
    page = conn.front.alloc_pages(1)
    assert io(fi, be, 1, BLKIF_OP_READ, page, 0, 8, 5) == [(5, BLKIF_RSP_OKAY)]


# --- a malicious backend ----------------------------------------------------------------------


def _one_request(kind="null"):
    conn = connect(indirect=False)
    fi, be = devices(conn, kind=kind)
    page = conn.front.alloc_pages(1)
    rid = fi.queue_request(0, BLKIF_OP_READ, 0, 8, page, 11)
    fi.flush_requests(0)
    return conn, fi, be, rid


@pytest.mark.parametrize("tamper", ["unknown id", "id out of range", "wrong operation",
                                    "duplicate response", "producer overflow"])
def test_frontend_rejects_a_broken_backend(tamper):
    conn, fi, be, rid = _one_request()
    sring = conn.rings[0].sring
    off = 64  # slot 0, where the backend would answer the first request
    put_u64(sring, off + RSP_OFF_ID, {"unknown id": (rid + 1) % conn.nr_ents,
                                      "id out of range": 1 << 40}.get(tamper, rid))
    put_u8(sring, off + RSP_OFF_OPERATION,
           BLKIF_OP_WRITE if tamper == "wrong operation" else BLKIF_OP_READ)
    put_u16(sring, off + RSP_OFF_STATUS, 0)
    if tamper == "duplicate response":
        put_u64(sring, off + 112 + RSP_OFF_ID, rid)
        put_u8(sring, off + 112 + RSP_OFF_OPERATION, BLKIF_OP_READ)
    prod = {"duplicate response": 2, "producer overflow": conn.nr_ents + 1}.get(tamper, 1)
    sring_set(sring, RSP_PROD, prod)
    assert fi.interrupt(0)[0] == -1
    assert fi.stats()["responses"] == 0 or tamper == "duplicate response"
    page = conn.front.alloc_pages(1)
    assert fi.queue_request(0, BLKIF_OP_READ, 0, 8, page, 12) == BLKIF_QUEUE_DISCONNECTED


def test_blkfront_refuses_an_unconnected_device():
    conn = negotiate(vcpus=4, max_queues=4, frontend_num_queues=0)
    assert not conn.connected
    with pytest.raises(XbqError, match="not connected"):
        new_blkfront(conn)
    with pytest.raises(XbqError, match="not connected"):
        new_blkback(conn, new_vbd("null", DISK_SECTORS))


# --- grants naming pages the guest does not own (issue: grant frame unchecked) ----------------


def _bad_frame_grant(evil, frame, readonly=False):
    from xbq.xen.grant import GTF_permit_access, GTF_readonly

    ref = evil.conn.front.grant(DOMID_BACKEND, evil.page)
    e = evil.conn.front.shared[ref]
    e["frame"] = frame
    e["flags"] = GTF_permit_access | (GTF_readonly if readonly else 0)
    return ref


@pytest.mark.parametrize("op", [BLKIF_OP_READ, BLKIF_OP_WRITE])
@pytest.mark.parametrize("persistent", [True, False])
def test_grant_of_a_page_beyond_guest_memory_is_an_error_response(op, persistent):
    """The frame comes from the frontend: blkback must answer ERROR, not read or write past
    guest memory (under NUMBA_BOUNDSCHECK an out-of-range index would raise here)."""
    evil = Evil(persistent=persistent)
    pages_before = evil.conn.front.pages.copy()
    disk_before = evil.be.vbd.disk.copy()
    for frame in (evil.conn.front.nr_pages, evil.conn.front.nr_pages + 100, (1 << 31) + 1,
                  (1 << 32) - 1):
        bad = _bad_frame_grant(evil, frame)
        rc, rsps = evil.request(op=op, segs=[(bad, 0, 7)])
        assert rc == 0 and rsps == [(42, op, BLKIF_RSP_ERROR)]
    np.testing.assert_array_equal(evil.be.vbd.disk, disk_before)
    changed = np.flatnonzero((evil.conn.front.pages != pages_before).any(axis=1))
    assert set(changed) <= {evil.conn.rings[0].first_frame}  # only the ring page (responses)
    rc, rsps = evil.request(op=op, id=5)  # the ring keeps working
    assert rsps == [(5, op, BLKIF_RSP_OKAY)]


def test_indirect_descriptor_page_beyond_guest_memory_is_an_error_response():
    evil = Evil()
    bad = _bad_frame_grant(evil, evil.conn.front.nr_pages + 1)
    _, rsps = evil.indirect(ind_gref=bad)
    assert rsps == [(43, BLKIF_OP_READ, BLKIF_RSP_ERROR)]
    _, rsps = evil.indirect(id=44)
    assert rsps == [(44, BLKIF_OP_READ, BLKIF_RSP_OKAY)]


def test_indirect_table_naming_a_page_beyond_guest_memory_is_an_error_response():
    """The descriptor page is fine, a segment inside it grants a page past the guest."""
    evil = Evil()
    bad = _bad_frame_grant(evil, evil.conn.front.nr_pages + 9)
    table = evil.conn.front.pages[evil.page + 1]
    _, rsps = evil.indirect(nseg=12)  # builds the table with good grants
    assert rsps == [(43, BLKIF_OP_READ, BLKIF_RSP_OKAY)]
    put_u32(table, 5 * SEG_SIZE, bad)  # then point segment 5 at the bad grant
    off = evil.slot()
    put_u8(evil.sring, off + REQ_OFF_OPERATION, BLKIF_OP_INDIRECT)
    put_u8(evil.sring, off + IND_OFF_INDIRECT_OP, BLKIF_OP_READ)
    put_u16(evil.sring, off + IND_OFF_NR_SEGMENTS, 12)
    put_u64(evil.sring, off + REQ_OFF_ID, 77)
    put_u32(evil.sring, off + IND_OFF_INDIRECT_GREFS,
            evil.conn.front.grant(DOMID_BACKEND, evil.page + 1))
    _, rsps = evil.push()
    assert rsps == [(77, BLKIF_OP_READ, BLKIF_RSP_ERROR)]


# --- discard lengths are unsigned (issue: discard length sign) --------------------------------


@pytest.mark.parametrize("sector, nr_sects", [
    (0, 1 << 63), (0, (1 << 64) - 1), (DISK_SECTORS - 8, (1 << 64) - DISK_SECTORS + 16),
    (8, (1 << 64) - 8), ((1 << 64) - 8, 16), (DISK_SECTORS, 1)])
def test_discard_beyond_the_device_or_wrapping_is_an_error(sector, nr_sects):
    evil = Evil()
    evil.be.vbd.disk[:] = 0x5A
    _, rsps = evil.discard(sector, nr_sects)
    assert rsps == [(44, BLKIF_OP_DISCARD, BLKIF_RSP_ERROR)]
    assert (evil.be.vbd.disk == 0x5A).all()  # nothing was zeroed, least of all the end


def test_discard_of_the_last_sectors_and_of_nothing():
    evil = Evil()
    evil.be.vbd.disk[:] = 0x5A
    assert evil.discard(DISK_SECTORS - 8, 8)[1] == [(44, BLKIF_OP_DISCARD, BLKIF_RSP_OKAY)]
    assert (evil.be.vbd.disk[-8 * 512:] == 0).all() and (evil.be.vbd.disk[:-8 * 512] == 0x5A).all()
    assert evil.discard((1 << 64) - 1, 0)[1] == [(44, BLKIF_OP_DISCARD, BLKIF_RSP_OKAY)]
    assert (evil.be.vbd.disk[:-8 * 512] == 0x5A).all()


def test_the_test_packer_writes_what_blkfront_writes():
    """``pack_request`` (the tests' raw requests) and blkfront agree byte for byte."""
    pair = connected_pair(1)
    fi = pair.front
    page = pair.conn.front.alloc_pages(2)
    rid = fi.queue_request(0, BLKIF_OP_READ, 80, 16, page, 5)
    s = fi.shadow[0, rid]
    img = bytes(s["req"])
    grefs = [int(fi.grants[0][g]["gref"]) for g in s["grants_used"][:2]]
    buf = np.zeros(112, np.uint8)
    pack_request(buf, 0, op=BLKIF_OP_READ, id=rid, sector=80, segs=[(g, 0, 7) for g in grefs])
    buf[2:4] = np.frombuffer(img[2:4], np.uint8)  # the handle, which blkfront sets
    assert bytes(buf) == img
