"""Benchmark: single-thread request round trips through the ring, xbq (numba) vs pure Python.

Both run the same loop on the same kind of data: a 4 KiB read is queued by the frontend
(shadow id, persistent grant, a 112-byte request written into a slot of a 4096-byte shared
page), pushed with the event-index check, consumed by the backend (copy, validate, map the
grant, null device, 16-byte response, push and check), and completed by the frontend (copy the
response, check id and operation, release the grant and the id, final check). Reported, not
asserted: run with ``make bench`` (or ``pytest -m benchmark -s tests/test_bench_ring.py``).
"""

import struct
import time

import pytest

from xbq.blkif.loopback import loopback
from xbq.blkif.negotiate import negotiate

pytestmark = pytest.mark.benchmark

REQ = struct.Struct("<BBHxxxxQQ")  # operation, nr_segments, handle, id, sector_number
SEG = struct.Struct("<IBBxx")  # gref, first_sect, last_sect
RSP = struct.Struct("<QBxh")  # id, operation, status
HDR = struct.Struct("<IIII")  # req_prod, req_event, rsp_prod, rsp_event
M32 = 0xFFFFFFFF


class PyRing:
    """ring.h in pure Python on a bytearray page (one page: 32 slots)."""

    def __init__(self):
        self.page = bytearray(4096)
        HDR.pack_into(self.page, 0, 0, 1, 0, 1)
        self.size = 32

    def hdr(self, k):
        return struct.unpack_from("<I", self.page, 4 * k)[0]

    def set_hdr(self, k, v):
        struct.pack_into("<I", self.page, 4 * k, v & M32)

    def slot(self, idx):
        return 64 + (idx & (self.size - 1)) * 112

    def push_and_check(self, prod_k, event_k, new):
        old = self.hdr(prod_k)
        self.set_hdr(prod_k, new)
        event = self.hdr(event_k)
        return ((new - event) & M32) < ((new - old) & M32)


class PyFront:
    def __init__(self, ring, gnttab):
        self.ring, self.gnttab = ring, gnttab
        self.req_prod_pvt = self.rsp_cons = 0
        self.free_ids = list(range(ring.size))
        self.shadow = [None] * ring.size
        self.grants = []  # persistent grant refs kept by the backend
        self.next_ref = 8
        self.notify = 0

    def queue(self, sector, tag):
        rid = self.free_ids.pop()
        ref = self.grants.pop() if self.grants else self._new_grant()
        img = bytearray(112)
        REQ.pack_into(img, 0, 0, 1, 51712, rid, sector)
        SEG.pack_into(img, 24, ref, 0, 7)
        off = self.ring.slot(self.req_prod_pvt)
        self.ring.page[off:off + 112] = img
        self.req_prod_pvt = (self.req_prod_pvt + 1) & M32
        self.shadow[rid] = (tag, 0, ref)

    def _new_grant(self):
        ref = self.next_ref
        self.next_ref += 1
        self.gnttab[ref] = {"domid": 0, "flags": 1}
        return ref

    def flush(self, evtchn):
        if self.ring.push_and_check(0, 1, self.req_prod_pvt):
            evtchn["back"] = 1
            self.notify += 1

    def interrupt(self, done):
        ring = self.ring
        while True:
            rp = ring.hdr(2)
            if ((rp - self.rsp_cons) & M32) > ring.size:
                raise RuntimeError("bogus backend")
            i = self.rsp_cons
            while i != rp:
                off = ring.slot(i)
                rid, op, status = RSP.unpack_from(bytes(ring.page[off:off + 16]))
                entry = self.shadow[rid] if 0 <= rid < ring.size else None
                if entry is None or op != entry[1]:
                    raise RuntimeError("bad response")
                self.shadow[rid] = None
                self.grants.append(entry[2])  # still mapped: keep it persistent
                self.free_ids.append(rid)
                done.append((entry[0], status))
                i = (i + 1) & M32
            self.rsp_cons = i
            if i != self.req_prod_pvt:
                if ((ring.hdr(2) - i) & M32):
                    continue
            else:
                ring.set_hdr(3, i + 1)
                if ((ring.hdr(2) - i) & M32):
                    continue
            return


class PyBack:
    def __init__(self, ring, gnttab, sectors):
        self.ring, self.gnttab, self.sectors = ring, gnttab, sectors
        self.req_cons = self.rsp_prod_pvt = 0
        self.persistent = {}
        self.notify = 0

    def make_response(self, rid, op, status, evtchn):
        off = self.ring.slot(self.rsp_prod_pvt)
        RSP.pack_into(self.ring.page, off, rid, op, status)
        self.rsp_prod_pvt = (self.rsp_prod_pvt + 1) & M32
        if self.ring.push_and_check(2, 3, self.rsp_prod_pvt):
            evtchn["front"] = 1
            self.notify += 1

    def dispatch(self, req, evtchn):
        op, nseg, _, rid, sector = REQ.unpack_from(req)
        if op > 1 or not 0 < nseg <= 11:
            return self.make_response(rid, op, -1, evtchn)
        nsect = 0
        refs = []
        for i in range(nseg):
            ref, first, last = SEG.unpack_from(req, 24 + 8 * i)
            if last > 7 or last < first:
                return self.make_response(rid, op, -1, evtchn)
            nsect += last - first + 1
            refs.append(ref)
        if sector + nsect > self.sectors:
            return self.make_response(rid, op, -1, evtchn)
        for ref in refs:
            if ref not in self.persistent:
                e = self.gnttab.get(ref)
                if e is None or e["domid"] != 0 or not e["flags"] & 1:
                    return self.make_response(rid, op, -1, evtchn)
                e["flags"] |= 0x18
                self.persistent[ref] = True
        self.make_response(rid, op, 0, evtchn)  # the null device completes at once

    def do_block_io_op(self, evtchn):
        ring = self.ring
        while True:
            rp = ring.hdr(0)
            if ((rp - self.rsp_prod_pvt) & M32) > ring.size:
                raise RuntimeError("bogus ring")
            rc = self.req_cons
            while rc != rp:
                off = ring.slot(rc)
                req = bytes(ring.page[off:off + 112])  # copy, then validate the copy
                rc = (rc + 1) & M32
                self.req_cons = rc
                self.dispatch(req, evtchn)
            if (ring.hdr(0) - self.req_cons) & M32:
                continue
            ring.set_hdr(1, self.req_cons + 1)
            if not (ring.hdr(0) - self.req_cons) & M32:
                return


def python_round_trips(n):
    ring, gnttab, evtchn = PyRing(), {}, {"front": 0, "back": 0}
    front, back = PyFront(ring, gnttab), PyBack(ring, gnttab, 1 << 21)
    done = []
    t0 = time.perf_counter()
    for k in range(n):
        front.queue(8 * k % (1 << 20), k)
        front.flush(evtchn)
        back.do_block_io_op(evtchn)
        front.interrupt(done)
    dt = time.perf_counter() - t0
    assert len(done) == n and all(s == 0 for _, s in done)
    assert [t for t, _ in done] == list(range(n))
    return n / dt, front.notify / n


def test_round_trips_numba_vs_python(capsys):
    conn = negotiate(vcpus=1, max_queues=1)
    loopback(conn, nr_ios=1000, bssplit="4k/100", rwmixread=100)  # JIT warm-up
    rows = []
    for rep in range(3):
        xbq = loopback(negotiate(vcpus=1, max_queues=1), nr_ios=300_000, bssplit="4k/100",
                       rwmixread=100, seed=rep)
        py, py_notify = python_round_trips(30_000)
        rows.append((xbq["round_trips_per_s"], py))
        assert xbq["front"]["notify"] == xbq["requests"] and py_notify == 1.0
    with capsys.disabled():
        print("\nsingle-thread round trips (4 KiB reads, null device, persistent grants):")
        for k, (a, b) in enumerate(rows):
            print(f"  run {k}: xbq {a:,.0f}/s  pure Python {b:,.0f}/s  ratio {a / b:.0f}x")
        best = max(r[0] / r[1] for r in rows)
        med = sorted(r[0] / r[1] for r in rows)[1]
        print(f"  median ratio {med:.0f}x, best {best:.0f}x")


# --- the floor: the same bytes and barriers, no protocol logic ----------------------------------

from xbq._jit import kernel  # noqa: E402
from xbq.xen.ring import (  # noqa: E402
    RING_COPY_REQUEST,
    RING_COPY_RESPONSE,
    RING_FINAL_CHECK_FOR_REQUESTS,
    RING_FINAL_CHECK_FOR_RESPONSES,
    RING_GET_REQUEST,
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY,
    RING_PUSH_RESPONSES_AND_CHECK_NOTIFY,
    attach_back_ring,
    new_front_ring,
)


@kernel
def _floor_round_trips(sring, front, back, image, req_copy, rsp, rsp_copy, n):
    """``n`` round trips of one request with no protocol logic: the frontend copies a
    112-byte request image into the next slot and pushes it (barrier, event check); the
    backend copies the slot out (XSA-155's copy), writes a 16-byte response into the slot,
    pushes it (barrier, event check) and makes its final check; the frontend copies the
    response out and makes its final check. No shadow, grant, validation or completion."""
    notified = 0
    for _ in range(n):
        off = RING_GET_REQUEST(front, front.req_prod_pvt)
        for b in range(112):
            sring[off + b] = image[b]
        front.req_prod_pvt += 1
        notified += RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(sring, front)
        RING_COPY_REQUEST(sring, back, back.req_cons, req_copy)
        back.req_cons += 1
        off = RING_GET_REQUEST(back, back.rsp_prod_pvt)
        for b in range(16):
            sring[off + b] = rsp[b]
        back.rsp_prod_pvt += 1
        RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(sring, back)
        RING_FINAL_CHECK_FOR_REQUESTS(sring, back)
        RING_COPY_RESPONSE(sring, front, front.rsp_cons, rsp_copy)
        front.rsp_cons += 1
        RING_FINAL_CHECK_FOR_RESPONSES(sring, front)
    return notified


def floor_round_trips(n):
    import numpy as np

    sring, front = new_front_ring(0)
    back = attach_back_ring(sring)
    image, req_copy = np.arange(112, dtype=np.uint8), np.zeros(112, np.uint8)
    rsp, rsp_copy = np.arange(16, dtype=np.uint8), np.zeros(16, np.uint8)
    _floor_round_trips(sring, front[0], back[0], image, req_copy, rsp, rsp_copy, 10)  # compile
    t0 = time.perf_counter()
    notified = _floor_round_trips(sring, front[0], back[0], image, req_copy, rsp, rsp_copy, n)
    dt = time.perf_counter() - t0
    assert notified == n and bytes(req_copy) == bytes(image)  # it ran, every request woke
    return n / dt


def test_round_trips_against_the_floor(capsys):
    """xbq's protocol round trip as a multiple of the floor (reported, never asserted)."""
    conn = negotiate(vcpus=1, max_queues=1)
    loopback(conn, nr_ios=1000, bssplit="4k/100", rwmixread=100)  # JIT warm-up
    rows = []
    for rep in range(3):
        xbq = loopback(negotiate(vcpus=1, max_queues=1), nr_ios=300_000, bssplit="4k/100",
                       rwmixread=100, seed=rep)["round_trips_per_s"]
        rows.append((xbq, floor_round_trips(3_000_000)))
    with capsys.disabled():
        print("\nround trips against the floor (same bytes and barriers, no protocol logic):")
        for k, (a, f) in enumerate(rows):
            print(f"  run {k}: xbq {a:,.0f}/s  floor {f:,.0f}/s  xbq = {f / a:.2f}x the floor")
        print(f"  median {sorted(f / a for a, f in rows)[1]:.2f}x (aim <= 2x)")
