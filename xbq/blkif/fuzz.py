"""Fuzzing the protocol core: a malicious frontend against the real blkback, and a malicious
backend against the real blkfront, with every invariant checked after every step.

:class:`BackendFuzz` owns a connected device (one ring, a small ramdisk) and plays the guest:
it writes arbitrary bytes into request slots, indirect descriptor pages and grant entries
(flags, domid, frame), moves the producer index anywhere in the 32-bit range, then lets the
real blkback run (``do_block_io_op``, inline or deferred dispatch, the deferred requests
completed by ``__end_block_io_op``). After every step :meth:`BackendFuzz.check` holds the
backend to what the protocol promises (reference §5, §9):

* ``do_block_io_op`` returns 0, 1 or ``-EACCES`` and nothing raises;
* every consumed request gets exactly one response carrying its ``id`` (and its operation),
  and no response answers anything else; in-flight requests never exceed ``RING_SIZE``;
* after a bogus-ring halt nothing more is consumed, and the only responses are those still
  owed to requests consumed before it;
* when the ring is idle, the ``pending_req`` pool is full again, every grant handle is back
  except the persistent grants, and no persistent grant is marked in use;
* the disk changes only inside the range of a write (or discard) answered ``BLKIF_RSP_OKAY``
  in that step, and guest memory only in the ring pages and in pages the guest granted
  writable to the backend; an error response changes nothing.

:class:`FrontendFuzz` is the mirror: requests in flight on the real blkfront, a backend that
writes arbitrary response bytes and producer indices, and ``blkif_interrupt`` must never
raise, must hand back only requests that were waiting, with the operation they were sent
with, each once, and must enter ``BLKIF_STATE_ERROR`` on a producer index more than
``RING_SIZE`` ahead.

Each case is drawn from ``np.random.default_rng([seed, case])`` and logged action by action,
so a failing case prints as a reproducible byte dump (:meth:`Case.dump`). :func:`campaign`
runs many cases (``xbq fuzz``); the hypothesis tests in ``tests/test_fuzz.py`` drive the same
classes with drawn actions.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from xbq.blkif.blkback import new_blkback
from xbq.blkif.blkfront import BLKIF_STATE_ERROR, new_blkfront
from xbq.blkif.negotiate import negotiate
from xbq.blkif.vbd import new_vbd
from xbq.errors import XbqError
from xbq.xen.abi import (
    BLKIF_OP_DISCARD,
    BLKIF_OP_FLUSH_DISKCACHE,
    BLKIF_OP_INDIRECT,
    BLKIF_OP_READ,
    BLKIF_OP_WRITE,
    BLKIF_OP_WRITE_BARRIER,
    BLKIF_RING_ENTRY_SIZE,
    BLKIF_RSP_EOPNOTSUPP,
    BLKIF_RSP_ERROR,
    BLKIF_RSP_OKAY,
    DISC_OFF_NR_SECTORS,
    IND_OFF_INDIRECT_GREFS,
    IND_OFF_INDIRECT_OP,
    IND_OFF_NR_SEGMENTS,
    REQ_OFF_ID,
    REQ_OFF_NR_SEGMENTS,
    REQ_OFF_OPERATION,
    REQ_OFF_SECTOR_NUMBER,
    REQ_OFF_SEG,
    RSP_OFF_ID,
    RSP_OFF_OPERATION,
    RSP_OFF_STATUS,
    SECTOR_SIZE,
    SEG_SIZE,
    SRING_RING_OFFSET,
    XEN_PAGE_SIZE,
)
from xbq.xen.grant import (
    DOMID_BACKEND,
    GTF_permit_access,
    GTF_readonly,
    GTF_type_mask,
    xen_domain,
)
from xbq.xen.ring import REQ_PROD, RSP_PROD, sring_set

MASK32 = 0xFFFFFFFF
#: The fuzzed device: a ramdisk of this many 512-byte sectors (512 KiB).
DISK_SECTORS = 1024
#: Guest pages the fuzzing frontend may grant (beyond the ring's own pages).
DATA_PAGES = 24
#: Grant-table entries of the fuzzing guest.
NR_GREFS = 128
RING_ORDERS = (0, 1)
OPS = (BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_OP_FLUSH_DISKCACHE, 4,
       BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT, 7, 0xFF)
STATUS_NAMES = {BLKIF_RSP_OKAY: "okay", BLKIF_RSP_ERROR: "error",
                BLKIF_RSP_EOPNOTSUPP: "eopnotsupp"}


class Violation(AssertionError):
    """An invariant of the protocol did not hold (the message says which)."""


def _u64(buf: np.ndarray, off: int) -> int:
    return int(buf[off:off + 8].view("<u8")[0])


def _u32(buf: np.ndarray, off: int) -> int:
    return int(buf[off:off + 4].view("<u4")[0])


def _u16(buf: np.ndarray, off: int) -> int:
    return int(buf[off:off + 2].view("<u2")[0])


def _i16(buf: np.ndarray, off: int) -> int:
    return int(buf[off:off + 2].view("<i2")[0])


@dataclass
class Case:
    """What one case did: its configuration and every action, for a reproducible dump."""

    side: str
    seed: int
    index: int
    config: dict
    actions: list = field(default_factory=list)

    def log(self, name: str, **args) -> None:
        self.actions.append((name, args))

    def dump(self) -> str:
        lines = [f"case {self.index} of seed {self.seed} ({self.side} side): {self.config}"]
        for k, (name, args) in enumerate(self.actions):
            text = ", ".join(f"{a}={bytes(v).hex() if isinstance(v, (bytes, np.ndarray)) else v}"
                             for a, v in args.items())
            lines.append(f"  {k:3d} {name}({text})")
        return "\n".join(lines)


# --- the malicious frontend -------------------------------------------------------------------


class BackendFuzz:
    """A malicious guest on ring 0 of a connected device, against the real blkback.

    Parameters
    ----------
    persistent : bool
        Negotiate persistent grants.
    defer : bool
        Deferred dispatch (requests wait for :meth:`complete`) instead of inline completion.
    order : int
        ``ring-page-order`` (0: 32 slots, 1: 64).
    start : int
        The ring's starting index (both producers), to cross the 2**32 wrap.
    readonly : bool
        A read-only vbd.
    """

    def __init__(self, *, persistent=True, defer=False, order=0, start=0, readonly=False):

        front = xen_domain(1, (1 << order) + DATA_PAGES, NR_GREFS)
        conn = negotiate(vcpus=1, max_queues=1, max_ring_page_order=order,
                         feature_persistent=persistent, sectors=DISK_SECTORS, front=front,
                         readonly=readonly)
        if not conn.connected:
            raise XbqError(f"fuzz device did not connect: {conn.error}")
        self.conn = conn
        self.sring = conn.rings[0].sring
        self.nr_ents = conn.nr_ents
        self.ring_frames = set(range(conn.rings[0].first_frame,
                                     conn.rings[0].first_frame + (1 << order)))
        self.data_first = front.alloc_pages(DATA_PAGES)
        sring_set(self.sring, REQ_PROD, start)
        sring_set(self.sring, RSP_PROD, start)
        self.vbd = new_vbd("ramdisk", DISK_SECTORS, readonly=readonly)
        self.be = new_blkback(conn, self.vbd, defer=defer)
        self.disk = self.vbd.disk
        self.defer = defer
        self.prod = start & MASK32  # the guest's req_prod_pvt
        self.cons_seen = start & MASK32  # blkback's req_cons at the last check
        self.rsp_seen = start & MASK32  # blkback's rsp_prod_pvt at the last check
        # Requests owed a response, counted by (id, the operation the response must carry),
        # and the write ranges of every such request consumed since the count was last 0. A
        # response cannot say which of two requests with the same id it answers, so its
        # write may land in the range of any of them (ids are unique in practice).
        self.outstanding = Counter()
        self.spans: dict[tuple, list] = {}
        self.halted = False
        self.writable = set()  # frames ever granted writable to the backend
        self.ring_pins = int(conn.front.active["pin"].sum())
        self.stats = Counter()
        self._note_grants()

    # -- what the guest does ------------------------------------------------------------

    def _slot(self, k: int) -> int:
        return SRING_RING_OFFSET + ((self.prod + k) & (self.nr_ents - 1)) * BLKIF_RING_ENTRY_SIZE

    def write_slot(self, k: int, raw: bytes) -> None:
        """Write 112 raw bytes into the slot ``k`` past the guest's producer index."""
        off = self._slot(k)
        self.sring[off:off + BLKIF_RING_ENTRY_SIZE] = np.frombuffer(
            bytes(raw).ljust(BLKIF_RING_ENTRY_SIZE, b"\0")[:BLKIF_RING_ENTRY_SIZE], np.uint8)

    def write_grant(self, ref: int, flags: int, domid: int, frame: int) -> None:
        """Write a grant entry (any values; the reserved entries included)."""
        e = self.conn.front.shared[ref % NR_GREFS]
        e["frame"], e["domid"], e["flags"] = frame & MASK32, domid & 0xFFFF, flags & 0xFFFF
        self._note_grants()

    def grant_page(self, page: int, readonly: bool) -> int:
        """Grant data page ``page`` to the backend the proper way; return the reference."""
        ref = self.conn.front.grant(DOMID_BACKEND, self.data_first + page % DATA_PAGES,
                                    readonly)
        self._note_grants()
        return ref

    def write_page(self, page: int, offset: int, raw: bytes) -> None:
        """Write bytes into one of the guest's data pages (an indirect descriptor table)."""
        buf = self.conn.front.pages[self.data_first + page % DATA_PAGES]
        data = np.frombuffer(bytes(raw), np.uint8)[:XEN_PAGE_SIZE - offset % XEN_PAGE_SIZE]
        buf[offset % XEN_PAGE_SIZE:offset % XEN_PAGE_SIZE + data.size] = data

    def publish(self, count: int) -> None:
        """Advance ``req_prod`` by ``count`` (mod 2**32; beyond the ring size is bogus)."""
        self.set_prod(self.prod + count)

    def set_prod(self, value: int) -> None:
        """Store any 32-bit value as ``req_prod``."""
        self.prod = value & MASK32
        sring_set(self.sring, REQ_PROD, self.prod)

    def _note_grants(self) -> None:
        sh = self.conn.front.shared
        ok = ((sh["flags"] & GTF_type_mask) == GTF_permit_access) & (sh["domid"] == 0) \
            & ((sh["flags"] & GTF_readonly) == 0)
        self.writable.update(int(f) for f in sh["frame"][ok])

    # -- what the backend does, checked --------------------------------------------------

    def service(self) -> int:
        """``do_block_io_op`` on the ring, then :meth:`check`; returns its value."""
        before = self._snapshot()
        rc = self.be.do_block_io_op(0)
        self.check(before, rc)
        return rc

    def complete(self, count: int) -> int:
        """Complete up to ``count`` deferred requests (FIFO), then :meth:`check`."""
        before = self._snapshot()
        done = 0
        while done < count:
            pidx = self.be.pop_dispatched(0)
            if pidx < 0:
                break
            self.be.complete_io(0, pidx)
            done += 1
        self.check(before, None)
        return done

    def drain(self) -> None:
        """Complete everything deferred, then check the ring is back to its baseline."""
        if self.defer:
            self.complete(1 << 20)
        self.check_idle()

    def _snapshot(self) -> dict:
        self._note_grants()
        return {"sring": self.sring.copy(), "disk": self.disk.copy(),
                "pages": self.conn.front.pages.copy(),
                "shared": self.conn.front.shared.copy()}

    @staticmethod
    def _request_summary(slot: np.ndarray) -> tuple:
        """``((id, response operation), write range or None)`` of a consumed request, from
        blkback's copy: an indirect request is answered with its ``indirect_op``."""
        op = int(slot[REQ_OFF_OPERATION])
        rid = _u64(slot, REQ_OFF_ID)
        sector = _u64(slot, REQ_OFF_SECTOR_NUMBER)
        real = op
        span = None
        if op == BLKIF_OP_INDIRECT:
            real = int(slot[IND_OFF_INDIRECT_OP])
            if real == BLKIF_OP_WRITE:
                span = (sector, sector + 8 * _u16(slot, IND_OFF_NR_SEGMENTS))
        elif op in (BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_OP_FLUSH_DISKCACHE):
            span = (sector, sector + 8 * int(slot[REQ_OFF_NR_SEGMENTS]))
        elif op == BLKIF_OP_DISCARD:
            span = (sector, sector + _u64(slot, DISC_OFF_NR_SECTORS))
        return (rid, real), span

    def check(self, before: dict, rc: int | None) -> None:
        """Every invariant of one step (see the module docstring); raises :class:`Violation`."""
        be = self.be
        if rc is not None and rc not in (0, 1, -13):
            raise Violation(f"do_block_io_op returned {rc}, not 0, 1 or -EACCES")
        ring = be.rings[0]
        cons, rsp = int(ring["req_cons"]), int(ring["rsp_prod_pvt"])
        halted = bool(ring["halted"])
        consumed = (cons - self.cons_seen) & MASK32
        if self.halted and consumed:
            raise Violation(f"{consumed} request(s) consumed after the ring was halted")
        if consumed > self.nr_ents:
            raise Violation(f"{consumed} requests consumed in one step (ring size "
                            f"{self.nr_ents})")
        for k in range(consumed):
            idx = (self.cons_seen + k) & (self.nr_ents - 1)
            off = SRING_RING_OFFSET + idx * BLKIF_RING_ENTRY_SIZE
            key, span = self._request_summary(before["sring"][off:off + BLKIF_RING_ENTRY_SIZE])
            self.outstanding[key] += 1
            self.spans.setdefault(key, []).append(span)
        self.stats["consumed"] += consumed
        answered = (rsp - self.rsp_seen) & MASK32
        if answered > self.nr_ents:
            raise Violation(f"{answered} responses in one step (ring size {self.nr_ents})")
        allowed = []
        for k in range(answered):
            off = SRING_RING_OFFSET + ((self.rsp_seen + k) & (self.nr_ents - 1)) \
                * BLKIF_RING_ENTRY_SIZE
            rid = _u64(self.sring, off + RSP_OFF_ID)
            op = int(self.sring[off + RSP_OFF_OPERATION])
            status = _i16(self.sring, off + RSP_OFF_STATUS)
            key = (rid, op)
            if not self.outstanding[key]:
                raise Violation(f"response id {rid} op {op} status {status} answers no "
                                "consumed request (or answers one twice)")
            if status not in STATUS_NAMES:
                raise Violation(f"response id {rid} has status {status}")
            self.stats["rsp_" + STATUS_NAMES[status]] += 1
            if status == BLKIF_RSP_OKAY:
                allowed += [span for span in self.spans[key] if span is not None]
            self.outstanding[key] -= 1
            if not self.outstanding[key]:
                del self.outstanding[key], self.spans[key]
        in_flight = (cons - rsp) & MASK32
        if in_flight > self.nr_ents:
            raise Violation(f"{in_flight} requests in flight (ring size {self.nr_ents})")
        if halted and not self.halted:
            self.stats["halted"] += 1
        self.halted = halted
        self.cons_seen, self.rsp_seen = cons, rsp
        self._check_disk(before["disk"], allowed)
        self._check_pages(before["pages"])
        if not self.defer and not self.outstanding and int(ring["inflight"]) == 0:
            self.check_idle()

    def _check_disk(self, old: np.ndarray, allowed: list) -> None:
        diff = old.view(np.uint64) != self.disk.view(np.uint64)
        changed = np.flatnonzero(diff.reshape(-1, SECTOR_SIZE // 8).any(axis=1))
        if not changed.size:
            return
        ok = np.zeros(changed.size, bool)
        for lo, hi in allowed:
            ok |= (changed >= lo) & (changed < hi)
        if not ok.all():
            raise Violation(f"disk sector {int(changed[~ok][0])} changed outside every write "
                            "answered BLKIF_RSP_OKAY in this step")

    def _check_pages(self, old: np.ndarray) -> None:
        changed = np.flatnonzero((old.view(np.uint64) != self.conn.front.pages.view(np.uint64))
                                 .any(axis=1))
        bad = [int(f) for f in changed if f not in self.ring_frames and f not in self.writable]
        if bad:
            raise Violation(f"guest page {bad[0]} changed, but it is no ring page and was never "
                            "granted writable to the backend")

    def tally(self) -> None:
        """Add blkback's and the grant table's counters of interest to :attr:`stats`."""
        bs = self.be.stats()
        for name in ("persistent_hits", "map_ops", "map_errors", "st_ds_req", "st_f_req",
                     "st_oo_req"):
            self.stats[name] += bs[name]

    def check_idle(self) -> None:
        """With nothing in flight: every consumed request answered, every pool back."""
        be = self.be
        if self.outstanding:
            key = next(iter(self.outstanding))
            raise Violation(f"{sum(self.outstanding.values())} consumed request(s) never "
                            f"answered (first: id {key[0]}, operation {key[1]})")
        ring = be.rings[0]
        if int(ring["inflight"]) != 0 or int(ring["pending_nfree"]) != self.nr_ents:
            raise Violation(f"idle ring holds {self.nr_ents - int(ring['pending_nfree'])} "
                            f"pending_req ({int(ring['inflight'])} in flight)")
        handles = be.maptrack.shape[1] - int(ring["mt_nfree"])
        persistent = int(ring["persistent_gnt_c"])
        if handles != persistent or int((be.pgnt[0]["handle"] >= 0).sum()) != persistent:
            raise Violation(f"idle ring holds {handles} grant handles for {persistent} "
                            "persistent grants")
        if be.pgnt[0]["active"].any():
            raise Violation("an idle ring marks a persistent grant in use")
        pins = int(self.conn.front.active["pin"].sum()) - self.ring_pins
        if pins != persistent:
            raise Violation(f"the guest's grant table shows {pins} pins for {persistent} "
                            "persistent grants")


# --- the malicious backend ----------------------------------------------------------------------


class FrontendFuzz:
    """Requests in flight on the real blkfront, answered by a malicious backend."""

    def __init__(self, *, order=0, persistent=True):

        ents = 32 << order
        front = xen_domain(1, (1 << order) + 12 * ents + 8, 12 * ents + 64)
        conn = negotiate(vcpus=1, max_queues=1, max_ring_page_order=order,
                         feature_persistent=persistent, backend_max_indirect_segments=None,
                         sectors=DISK_SECTORS, front=front)
        if not conn.connected:
            raise XbqError(f"fuzz device did not connect: {conn.error}")
        self.conn = conn
        self.fe = new_blkfront(conn)
        self.sring = conn.rings[0].sring
        self.nr_ents = conn.nr_ents
        self.buf = front.alloc_pages(2)
        self.waiting = {}  # tag -> operation sent
        self.next_tag = 0
        self.rsp_prod = 0
        self.error = False
        self.stats = Counter()

    def queue(self, count: int, write: bool) -> None:
        """Put ``count`` requests on the ring (as far as it has room) and flush."""
        op = BLKIF_OP_WRITE if write else BLKIF_OP_READ
        for _ in range(count):
            rid = self.fe.queue_request(0, op, 8 * (self.next_tag % 64), 8, self.buf,
                                        self.next_tag)
            if rid < 0:
                break
            self.waiting[self.next_tag] = op
            self.next_tag += 1
        self.fe.flush_requests(0)

    def waiting_ids(self) -> list[tuple[int, int]]:
        """``(id, operation)`` of every request the frontend is waiting for (what a
        well-behaved backend would answer)."""
        sh = self.fe.shadow[0]
        return [(int(i), int(sh[i]["operation"])) for i in np.flatnonzero(sh["request"] >= 0)]

    def write_response(self, k: int, raw: bytes) -> None:
        """Write 16 raw bytes into the response slot ``k`` past the backend's producer."""
        off = SRING_RING_OFFSET + ((self.rsp_prod + k) & (self.nr_ents - 1)) \
            * BLKIF_RING_ENTRY_SIZE
        self.sring[off:off + 16] = np.frombuffer(bytes(raw).ljust(16, b"\0")[:16], np.uint8)

    def answer(self, k: int, slot_id: int, op: int, status: int) -> None:
        """Write a well-formed response (``id``, ``operation``, ``status``) into slot ``k``."""
        raw = np.zeros(16, np.uint8)
        raw[RSP_OFF_ID:RSP_OFF_ID + 8].view("<u8")[0] = slot_id & ((1 << 64) - 1)
        raw[RSP_OFF_OPERATION] = op & 0xFF
        raw[RSP_OFF_STATUS:RSP_OFF_STATUS + 2].view("<i2")[0] = np.int16(status)
        self.write_response(k, raw.tobytes())

    def set_rsp_prod(self, value: int) -> None:
        self.rsp_prod = value & MASK32
        sring_set(self.sring, RSP_PROD, self.rsp_prod)

    def interrupt(self) -> int:
        """``blkif_interrupt``, checked: only waiting requests, once, with their operation."""
        fe = self.fe
        cons = int(fe.rinfo[0]["rsp_cons"])
        overflow = ((self.rsp_prod - cons) & MASK32) > self.nr_ents
        ops = {}
        for k in range(min((self.rsp_prod - cons) & MASK32, self.nr_ents)):
            off = SRING_RING_OFFSET + ((cons + k) & (self.nr_ents - 1)) * BLKIF_RING_ENTRY_SIZE
            ops[k] = int(self.sring[off + RSP_OFF_OPERATION])
        n, tags, _ = fe.interrupt(0)
        state = fe.connected
        if n < -1:
            raise Violation(f"blkif_interrupt returned {n}")
        if self.error:
            if n != 0:
                raise Violation(f"blkif_interrupt handled {n} responses in the error state")
            return n
        if overflow and n != -1:
            raise Violation("a response producer more than RING_SIZE ahead was not an error")
        if n == -1:
            if state != BLKIF_STATE_ERROR:
                raise Violation("blkif_interrupt failed without entering the error state")
            self.error = True
            self.stats["errors"] += 1
            return n
        for k in range(n):
            tag = int(tags[k])
            if tag not in self.waiting:
                raise Violation(f"blkif_interrupt completed tag {tag}, which was not waiting")
            if ops.get(k) is not None and ops[k] != self.waiting[tag]:
                raise Violation(f"tag {tag} completed by a response with operation {ops[k]}, "
                                f"not {self.waiting[tag]}")
            del self.waiting[tag]
        self.stats["completed"] += n
        return n


# --- the campaign -----------------------------------------------------------------------------


def _pick(rng, values: list):
    """One of ``values``, as it is (``rng.choice`` would cast big ints and tuples)."""
    return values[int(rng.integers(len(values)))]


def _raw(rng, n: int) -> bytes:
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


#: Chance that a drawn field is well formed; a request of five fields is then entirely well
#: formed about 40 % of the time and wrong in one field or more otherwise.
GOOD = 0.83


def _request_bytes(rng, fz: BackendFuzz, case: Case, grefs: list) -> bytes:
    """A request slot: random bytes, or a request whose every field is well formed with
    probability ``GOOD`` and otherwise drawn from that field's edge cases."""
    if rng.random() < 0.1:
        return _raw(rng, BLKIF_RING_ENTRY_SIZE)

    def good():
        return rng.random() < GOOD

    raw = np.zeros(BLKIF_RING_ENTRY_SIZE, np.uint8)
    op = _pick(rng, [BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_INDIRECT, BLKIF_OP_DISCARD,
                     BLKIF_OP_FLUSH_DISKCACHE]) if good() else _pick(rng, OPS)
    raw[REQ_OFF_OPERATION] = op
    raw[REQ_OFF_ID:REQ_OFF_ID + 8].view("<u8")[0] = int(rng.integers(0, 64)) if good() \
        else int(rng.integers(0, 1 << 64, dtype=np.uint64))
    nseg = int(rng.integers(1, 12)) if good() else _pick(rng, [0, 12, 255, 256, 257, 512,
                                                              513, 65535])
    if op == BLKIF_OP_INDIRECT:
        nseg = int(rng.integers(12, 65)) if good() else nseg
    sector = int(rng.integers(0, DISK_SECTORS - 8 * max(min(nseg, 64), 1)) // 8 * 8) \
        if good() else _pick(rng, [DISK_SECTORS - 7, DISK_SECTORS, (1 << 63) + 5,
                                   (1 << 64) - 4, int(rng.integers(0, 1 << 63))])
    raw[REQ_OFF_SECTOR_NUMBER:REQ_OFF_SECTOR_NUMBER + 8].view("<u8")[0] = sector

    def gref():
        return int(rng.choice(grefs)) if grefs and good() else int(rng.integers(0, 1 << 32))

    def seg(buf, off):
        buf[off:off + 4].view("<u4")[0] = gref()
        first, last = (0, 7) if good() else _pick(rng, [(5, 4), (0, 8), (9, 9), (255, 255),
                                                        (3, 3)])
        buf[off + 4], buf[off + 5] = first, last

    if op == BLKIF_OP_DISCARD:
        n = int(rng.integers(1, 65)) if good() else _pick(
            rng, [0, DISK_SECTORS, (1 << 63) + 1, (1 << 64) - 1,
                  int(rng.integers(0, 1 << 64, dtype=np.uint64))])
        raw[DISC_OFF_NR_SECTORS:DISC_OFF_NR_SECTORS + 8].view("<u8")[0] = n
    elif op == BLKIF_OP_INDIRECT:
        raw[IND_OFF_INDIRECT_OP] = _pick(rng, [BLKIF_OP_READ, BLKIF_OP_WRITE]) if good() \
            else _pick(rng, [BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, 9])
        raw[IND_OFF_NR_SEGMENTS:IND_OFF_NR_SEGMENTS + 2].view("<u2")[0] = nseg
        page = int(rng.integers(0, DATA_PAGES))
        ref = fz.grant_page(page, rng.random() < 0.2) if good() else gref()
        grefs.append(ref)
        raw[IND_OFF_INDIRECT_GREFS:IND_OFF_INDIRECT_GREFS + 4].view("<u4")[0] = ref
        if rng.random() < 0.1:
            raw[IND_OFF_INDIRECT_GREFS + 4:IND_OFF_INDIRECT_GREFS + 8].view("<u4")[0] = gref()
        table = np.zeros(min(nseg, 512) * SEG_SIZE, np.uint8)
        for i in range(min(nseg, 512)):
            seg(table, i * SEG_SIZE)
        fz.write_page(page, 0, table.tobytes())
        case.log("write_page", page=page, offset=0, raw=table)
    elif op != BLKIF_OP_FLUSH_DISKCACHE or rng.random() < 0.5:
        raw[REQ_OFF_NR_SEGMENTS] = nseg & 0xFF
        for i in range(min(nseg, 11)):
            seg(raw, REQ_OFF_SEG + i * SEG_SIZE)
    return raw.tobytes()


def _grant(rng, fz: BackendFuzz, case: Case, grefs: list) -> None:
    """A grant entry: a good one (a data page, writable or read-only, to the backend) with
    probability ``GOOD``, else one wrong in its flags, domain or frame."""
    ref = int(rng.integers(8, NR_GREFS))
    flags = GTF_permit_access | (GTF_readonly if rng.random() < 0.15 else 0)
    domid = 0
    frame = fz.data_first + int(rng.integers(0, DATA_PAGES))
    if rng.random() > GOOD:
        n = fz.conn.front.nr_pages
        what = int(rng.integers(0, 3))
        if what == 0:
            flags = _pick(rng, [0, 2, 3, int(rng.integers(0, 1 << 16))])
        elif what == 1:
            domid = _pick(rng, [1, 7, 0xFFFF])
        else:
            frame = _pick(rng, [n, n + 1, (1 << 31) + 3, (1 << 32) - 1,
                                int(rng.integers(0, 1 << 32))])
    fz.write_grant(ref, flags, domid, frame)
    case.log("write_grant", ref=ref, flags=flags, domid=domid, frame=frame)
    grefs.append(ref)


def backend_case(case: Case) -> BackendFuzz:
    """Draw and run one malicious-frontend case, logging into ``case``; raises
    :class:`Violation` on a broken rule."""
    rng = np.random.default_rng([case.seed, case.index])
    case.config.update(persistent=bool(rng.random() < 0.7), defer=bool(rng.random() < 0.5),
                       order=_pick(rng, RING_ORDERS),
                       start=_pick(rng, [0, (1 << 32) - 5, int(rng.integers(0, 1 << 32))]),
                       readonly=bool(rng.random() < 0.1))
    fz = BackendFuzz(**case.config)
    grefs: list = []
    for _ in range(int(rng.integers(1, 8))):
        _grant(rng, fz, case, grefs)
    for _ in range(int(rng.integers(1, 12))):
        a = rng.random()
        if a < 0.1:
            _grant(rng, fz, case, grefs)
        elif a < 0.75:
            n = int(rng.integers(1, 6))
            for k in range(n):
                raw = _request_bytes(rng, fz, case, grefs)
                fz.write_slot(k, raw)
                case.log("write_slot", k=k, raw=raw)
            count = n if rng.random() < 0.96 else \
                _pick(rng, [fz.nr_ents + 1, 2 * fz.nr_ents, 1 << 31, (1 << 32) - 1])
            fz.publish(count)
            case.log("publish", count=count)
            case.log("service")
            fz.service()
        elif a < 0.78:
            value = int(rng.integers(0, 1 << 32))
            fz.set_prod(value)
            case.log("set_prod", value=value)
            case.log("service")
            fz.service()
        else:
            count = int(rng.integers(1, 8))
            case.log("complete", count=count)
            fz.complete(count)
    case.log("drain")
    fz.drain()
    fz.tally()
    return fz


def frontend_case(case: Case) -> FrontendFuzz:
    """Draw and run one malicious-backend case, logging into ``case``; raises
    :class:`Violation` on a broken rule."""
    rng = np.random.default_rng([case.seed, case.index])
    case.config.update(order=_pick(rng, RING_ORDERS), persistent=bool(rng.random() < 0.7))
    fz = FrontendFuzz(**case.config)
    for _ in range(int(rng.integers(1, 12))):
        if rng.random() < 0.3 or not fz.waiting:
            count = int(rng.integers(1, fz.nr_ents + 1))
            write = bool(rng.random() < 0.3)
            case.log("queue", count=count, write=write)
            fz.queue(count, write)
            continue
        waiting = fz.waiting_ids()
        n = int(rng.integers(1, min(len(waiting), 6) + 1))
        picks = rng.permutation(len(waiting))[:n]
        for k in range(n):
            slot_id, op = waiting[int(picks[k])]
            if rng.random() < 0.06:
                raw = _raw(rng, 16)
                fz.write_response(k, raw)
                case.log("write_response", k=k, raw=raw)
                continue
            if rng.random() > 0.97:
                slot_id = _pick(rng, [fz.nr_ents, fz.nr_ents + 1, 1 << 40,
                                      int(rng.integers(0, fz.nr_ents))])
            if rng.random() > 0.97:
                op = _pick(rng, [BLKIF_OP_WRITE if op == BLKIF_OP_READ else BLKIF_OP_READ,
                                 BLKIF_OP_INDIRECT, 3])
            status = _pick(rng, [0, 0, 0, 0, -1, -2, 7])
            fz.answer(k, slot_id, op, status)
            case.log("answer", k=k, id=slot_id, op=op, status=status)
        prod = fz.rsp_prod + n if rng.random() < 0.97 else int(rng.integers(0, 1 << 32))
        fz.set_rsp_prod(prod)
        case.log("set_rsp_prod", value=prod & MASK32)
        case.log("interrupt")
        fz.interrupt()
    return fz


def campaign(cases: int, seed: int = 0, side: str = "back", progress=None) -> dict:
    """Run ``cases`` fuzz cases; return a summary (counts by outcome, the first failure).

    Parameters
    ----------
    cases : int
        Number of cases (each a fresh device and up to a dozen steps).
    seed : int
        Campaign seed; case ``i`` is drawn from ``default_rng([seed, i])``.
    side : {"back", "front", "both"}
        Fuzz blkback (a malicious frontend), blkfront (a malicious backend), or alternate.
    progress : callable, optional
        Called as ``progress(done, cases, summary)`` after each case.

    Returns
    -------
    dict
        ``cases``, ``seconds``, ``violations``, ``outcomes`` (counts by kind), ``first_failure``
        (the reproducible dump of the first violating case, or None).
    """
    if side not in ("back", "front", "both"):
        raise XbqError(f"--side must be back, front or both, not {side!r}")
    if cases < 1 or seed < 0:
        raise XbqError("cases must be >= 1 and seed >= 0")
    outcomes: Counter = Counter()
    violations = 0
    first = None
    t0 = time.perf_counter()
    for i in range(cases):
        kind = side if side != "both" else ("back", "front")[i % 2]
        run = backend_case if kind == "back" else frontend_case
        case = Case(kind, seed, i, {})
        try:
            fz = run(case)
            outcomes.update({f"{kind}:{k}": v for k, v in fz.stats.items()})
            outcomes[f"{kind}:cases"] += 1
            continue_ok = True
        except Violation as exc:
            continue_ok, what, message = False, "violations", str(exc)
        except Exception as exc:  # noqa: BLE001 - a crash is the worst violation of all
            continue_ok, what, message = False, "crashes", f"{type(exc).__name__}: {exc}"
        if not continue_ok:
            violations += 1
            outcomes[f"{kind}:{what}"] += 1
            if first is None:
                first = {"case": i, "side": kind, "violation": message, "dump": case.dump()}
        if progress is not None:
            progress(i + 1, cases, violations)
    return {"cases": cases, "seed": seed, "side": side,
            "seconds": time.perf_counter() - t0, "violations": violations,
            "outcomes": dict(sorted(outcomes.items())), "first_failure": first}
