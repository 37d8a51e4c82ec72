"""blkback: dom0's side of the blkif protocol (Linux ``drivers/block/xen-blkback/blkback.c``).

The state is one structured record array per lifetime, as the kernel's structs:

* ``blkif`` (:data:`XEN_BLKIF_DTYPE`, one record): ``struct xen_blkif``, the device;
* ``rings`` (:data:`XEN_BLKIF_RING_DTYPE`, one per ring): ``struct xen_blkif_ring`` (the back
  ring's private indices and where the mapped ring lies in the frontend's memory, the
  event channel, the heads of the ``pending_req`` free list, the deferred device queue and
  the maptrack free list, the persistent-grant count, the private copy of the request being
  handled, the ``st_*`` counters);
* ``pending`` (:data:`PENDING_REQ_DTYPE`, ``[ring, slot]``): ``struct pending_req``, 32 per
  ring page, each with room for 256 mapped segments and its indirect pages;
* ``pgnt`` (:data:`PERSISTENT_GNT_DTYPE`, ``[ring, gref]``): the ring's persistent grants
  (``struct persistent_gnt``), found by grant reference (the kernel's red-black tree);
* ``maptrack`` (:data:`xbq.xen.grant.MAPTRACK_DTYPE`, ``[ring, handle]``): the ring's grant
  handles.

With the frontend domain's grant table and active entries (``gnt``, ``active``), its memory
(``mem``), the event channels (``ev``) and the device (``vbd`` record, ``disk``), these are
the arrays of every kernel. :func:`do_block_io_op` is the unit of work of the per-ring thread
``xen_blkif_schedule``: consume requests until the ring is empty (ending with
``RING_FINAL_CHECK_FOR_REQUESTS``), each one copied into private memory first and validated
on the copy (XSA-155), then dispatched to the device; every consumed request gets exactly one
response from :func:`make_response`, error responses included. A frontend whose producer
index runs more than ``RING_SIZE`` ahead ("bogus ring requests") halts that ring: no
responses, ``-EACCES`` returned, the thread parks; other rings carry on.

Devices complete synchronously (the native engine: null device or ramdisk, inside
``do_block_io_op``) or, with ``defer`` set, the dispatched ``pending_req`` wait in a per-ring
FIFO until the engine calls :func:`__end_block_io_op` (the discrete-event engine, which
models device time).

A malicious frontend cannot crash the backend: every index that comes from the ring is
checked before use (grant references against the granter's table, the frames they name
against its memory, segment counts against the arrays, sectors against the device), and a
failing check becomes a ``BLKIF_RSP_ERROR``.

Not modelled: the 100 ms LRU purge of idle persistent grants, and the drain a
``WRITE_BARRIER`` waits for when requests are in flight in deferred mode (barriers are issued
as flushes).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from xbq._jit import kernel
from xbq.blkif.vbd import VBD_RAMDISK, vbd_discard, xen_vbd_translate
from xbq.errors import XbqError
from xbq.xen.abi import (
    BLKIF_MAX_SEGMENTS_PER_REQUEST,
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
    MAX_INDIRECT_PAGES,
    MAX_INDIRECT_SEGMENTS,
    REQ_OFF_ID,
    REQ_OFF_NR_SEGMENTS,
    REQ_OFF_OPERATION,
    REQ_OFF_SECTOR_NUMBER,
    REQ_OFF_SEG,
    RSP_OFF_ID,
    RSP_OFF_OPERATION,
    RSP_OFF_STATUS,
    SECTOR_SIZE,
    SECTORS_PER_PAGE,
    SEG_OFF_FIRST_SECT,
    SEG_OFF_LAST_SECT,
    SEG_SIZE,
    SEGS_PER_INDIRECT_FRAME,
    XEN_PAGE_SHIFT,
)
from xbq.xen.evtchn import notify_remote_via_evtchn
from xbq.xen.grant import (
    MAPTRACK_DTYPE,
    gnttab_map_grant_ref,
    gnttab_unmap_grant_ref,
    grant_page_read,
    grant_page_write,
    new_maptrack,
)
from xbq.xen.memory import MASK32, get_u8, get_u16, get_u32, get_u64, put_u8, put_u16, put_u64
from xbq.xen.ring import (
    REQ_PROD,
    RING_COPY_REQUEST,
    RING_FINAL_CHECK_FOR_REQUESTS,
    RING_GET_RESPONSE,
    RING_PUSH_RESPONSES_AND_CHECK_NOTIFY,
    RING_REQUEST_CONS_OVERFLOW,
    RING_REQUEST_PROD_OVERFLOW,
    RSP_PROD,
    sring_get,
)

EIO = 5
EACCES = 13

#: A blkback device's arrays by name, as the engines' kernels take them in one argument: its
#: records, the frontend domain's grant table, active entries and memory, the event
#: channels, the vbd and its disk (the order of :meth:`xen_blkif_device.args`).
Blkback = namedtuple("Blkback", "blkif rings pending pgnt maptrack gnt active mem evtchn vbd "
                                "disk")

#: blkback module parameter ``max_persistent_grants``: per ring.
XEN_BLKIF_MAX_PGRANTS = 1056

#: Per-ring counters (``rings["stats"]``); the first seven are the kernel's ``st_*``.
BLKBACK_STATS = (
    "st_rd_req", "st_wr_req", "st_oo_req", "st_f_req", "st_ds_req", "st_rd_sect", "st_wr_sect",
    "requests",  # requests consumed from the ring
    "batches",  # __do_block_io_op passes that consumed at least one request
    "final_checks",  # RING_FINAL_CHECK_FOR_REQUESTS calls
    "responses",  # responses made (exactly one per consumed request)
    "errors",  # BLKIF_RSP_ERROR responses
    "eopnotsupp",  # BLKIF_RSP_EOPNOTSUPP responses
    "notify",  # notifications sent to the frontend
    "map_ops",  # grant map operations
    "unmap_ops",  # grant unmap operations
    "persistent_hits",  # segments served by an already-mapped persistent grant
    "backoffs",  # msleep(1) back-offs after an invalid request
    "bogus",  # rings halted for a producer index beyond RING_SIZE
    "map_errors",  # grant maps the hypervisor refused
)
(ST_RD_REQ, ST_WR_REQ, ST_OO_REQ, ST_F_REQ, ST_DS_REQ, ST_RD_SECT, ST_WR_SECT, BS_REQUESTS,
 BS_BATCHES, BS_FINAL_CHECKS, BS_RESPONSES, BS_ERRORS, BS_EOPNOTSUPP, BS_NOTIFY, BS_MAP_OPS,
 BS_UNMAP_OPS, BS_PERSISTENT_HITS, BS_BACKOFFS, BS_BOGUS, BS_MAP_ERRORS) = range(
    len(BLKBACK_STATS))

#: ``struct xen_blkif``: the device, one record.
XEN_BLKIF_DTYPE = np.dtype([
    ("nr_rings", "<i8"), ("nr_ents", "<i8"),
    ("feature_persistent", "<i8"),  # feature_gnt_persistent: both ends offered it
    ("max_pgrants", "<i8"),  # max_persistent_grants per ring
    ("domid", "<i8"),  # the backend's own domain (what it maps grants for)
    ("nr_frames", "<i8"),  # pages of the frontend domain (frames a grant may name)
    ("defer", "<i8"),  # hand dispatched requests to a deferred device (the twin)
], align=True)

#: ``struct xen_blkif_ring``: one per ring.
XEN_BLKIF_RING_DTYPE = np.dtype([
    ("rsp_prod_pvt", "<u4"), ("req_cons", "<u4"), ("nr_ents", "<u4"),  # the back ring
    ("evtchn", "<i4"),  # the ring's event channel: the backend's port, as its slot
    ("sring", "<i8"),  # byte offset of the mapped ring in the frontend's memory
    ("sring_bytes", "<i8"),
    ("pending_free", "<i4"), ("pending_nfree", "<i4"),  # the pending_req free list
    ("dq_head", "<i4"), ("dq_tail", "<i4"), ("dq_count", "<i4"),  # the deferred device FIFO
    ("mt_free", "<i4"), ("mt_nfree", "<i4"),  # the maptrack free list
    ("persistent_gnt_c", "<i4"),
    ("overflow_max_grants", "i1"),
    ("halted", "i1"),  # a bogus producer halted the ring for good
    ("inflight", "<i8"),  # requests handed to the device, not yet answered
    ("req_copy", "u1", BLKIF_RING_ENTRY_SIZE + SEG_SIZE),  # the request, one indirect segment
    ("stats", "<i8", len(BLKBACK_STATS)),
], align=True)

#: One mapped segment of a pending_req: the grant and the device's share of it.
PENDING_SEG_DTYPE = np.dtype([
    ("gref", "<i4"), ("handle", "<i4"), ("first_sect", "u1"), ("last_sect", "u1"),
    ("persistent", "i1"),
], align=True)

#: ``struct pending_req``: one per response slot of a ring.
PENDING_REQ_DTYPE = np.dtype([
    ("id", "<u8"),  # the frontend's id, echoed in the response
    ("sector_number", "<i8"),
    ("nr_sects", "<i8"),
    ("nr_segs", "<i4"),
    ("next", "<i4"),  # link on the free list, or on the deferred device's FIFO
    ("status", "<i2"),  # BLKIF_RSP_* once the device is done
    ("operation", "u1"),  # the operation echoed (indirect_op for BLKIF_OP_INDIRECT)
    ("real_op", "u1"),  # what the device does: READ, WRITE, FLUSH_DISKCACHE, WRITE_BARRIER
    ("segs", PENDING_SEG_DTYPE, MAX_INDIRECT_SEGMENTS),
    ("ind", PENDING_SEG_DTYPE, MAX_INDIRECT_PAGES),
], align=True)

#: ``struct persistent_gnt`` of one ring and grant reference: its handle (-1: none) and
#: whether a request uses it now.
PERSISTENT_GNT_DTYPE = np.dtype([("handle", "<i4"), ("active", "i1")], align=True)


# --- pending_req pool ----------------------------------------------------------------------------


@kernel
def alloc_req(ring, pending):
    """blkback ``alloc_req``: take a free ``pending_req``; -1 when the pool is empty."""
    p = np.int64(ring.pending_free)
    if p < 0:
        return -1
    ring.pending_free = pending[p].next
    ring.pending_nfree -= 1
    return p


@kernel
def free_req(ring, pending, p):
    """blkback ``free_req``: put ``pending_req`` ``p`` back on the free list."""
    pending[p].next = ring.pending_free
    ring.pending_free = p
    ring.pending_nfree += 1


# --- responses -----------------------------------------------------------------------------------


@kernel(forceinline=True)
def make_response(ring, mem, ev, id, op, status):
    """blkback ``make_response``: write one response into the next slot, push, notify.

    Writes ``id``, ``operation`` and ``status`` straight into slot ``rsp_prod_pvt`` (the
    padding is left alone: XSA-216), then ``RING_PUSH_RESPONSES_AND_CHECK_NOTIFY``. The caller
    holds the ring's ``blk_ring_lock``. Returns True if the frontend was notified.
    """
    sring = mem[ring.sring:ring.sring + ring.sring_bytes]
    off = RING_GET_RESPONSE(ring, np.int64(ring.rsp_prod_pvt))
    put_u64(sring, off + RSP_OFF_ID, id)
    put_u8(sring, off + RSP_OFF_OPERATION, op)
    put_u16(sring, off + RSP_OFF_STATUS, status)
    ring.rsp_prod_pvt = (np.int64(ring.rsp_prod_pvt) + 1) & MASK32
    st = ring.stats
    st[BS_RESPONSES] += 1
    if status == BLKIF_RSP_ERROR:
        st[BS_ERRORS] += 1
    elif status == BLKIF_RSP_EOPNOTSUPP:
        st[BS_EOPNOTSUPP] += 1
    if RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(sring, ring):
        notify_remote_via_evtchn(ev, ring.evtchn)
        st[BS_NOTIFY] += 1
        return True
    return False


# --- grant mapping -----------------------------------------------------------------------------


@kernel(forceinline=True)
def _map_seg(be, ring, pgnt, mt, gnt, active, seg, readonly):
    """Map ``seg.gref`` for the ring (``xen_blkbk_map`` for one grant); fill ``seg``.

    A grant already in the ring's persistent map is reused; otherwise it is mapped with a
    hypercall and, with persistent grants negotiated and the ring under its cap, kept.
    Persistent mappings are always writable. Returns 0 or a negative ``GNTST_*`` status.
    """
    gref = np.int64(seg.gref)
    persistent = be.feature_persistent != 0
    seg.persistent = 0
    if gref < 0 or gref >= gnt.size:
        # Let the hypervisor refuse it (GNTST_bad_gntref) before it indexes anything.
        ring.stats[BS_MAP_ERRORS] += 1
        return gnttab_map_grant_ref(gnt, active, be.nr_frames, gref, be.domid, readonly, mt,
                                    ring)
    pg = pgnt[gref]
    if persistent and pg.handle >= 0 and pg.active == 0:
        pg.active = 1
        seg.handle = pg.handle
        seg.persistent = 1
        ring.stats[BS_PERSISTENT_HITS] += 1
        return 0
    h = gnttab_map_grant_ref(gnt, active, be.nr_frames, gref, be.domid,
                             readonly and not persistent, mt, ring)
    if h < 0:
        ring.stats[BS_MAP_ERRORS] += 1
        return h
    ring.stats[BS_MAP_OPS] += 1
    seg.handle = h
    if persistent and pg.handle < 0:
        if ring.persistent_gnt_c < be.max_pgrants:
            pg.handle = h
            pg.active = 1
            ring.persistent_gnt_c += 1
            seg.persistent = 1
        else:
            ring.overflow_max_grants = 1
    return 0


@kernel
def _unmap_segs(ring, pgnt, mt, gnt, active, segs, n):
    """Release ``n`` segments' mappings: a persistent grant stays mapped, any other is
    unmapped."""
    for i in range(n):
        seg = segs[i]
        if seg.persistent:
            pgnt[seg.gref].active = 0
        else:
            gnttab_unmap_grant_ref(gnt, active, mt, ring, seg.handle)
            ring.stats[BS_UNMAP_OPS] += 1


# --- dispatch ----------------------------------------------------------------------------------


@kernel
def _fail_response(ring, pending, mem, ev, p, id, op):
    """The common ``fail_response`` path: ERROR response, free the pending_req, back off."""
    make_response(ring, mem, ev, id, op, BLKIF_RSP_ERROR)
    free_req(ring, pending, p)
    ring.stats[BS_BACKOFFS] += 1  # msleep(1): the engines charge the time
    return -EIO


@kernel(forceinline=True)
def _parse_segments(be, ring, pgnt, mt, gnt, active, mem, pr, req, indirect, nseg):
    """Read and check the segments (inline, or from the indirect pages); return sectors or -1.

    Each ``last_sect`` must be at most 7 and not below ``first_sect``. Indirect pages are
    mapped read-only (writable if persistent), read once per entry through the checked copy,
    and released again.
    """
    segs = pr.segs
    nr_sects = 0
    if not indirect:
        for i in range(nseg):
            off = REQ_OFF_SEG + i * SEG_SIZE
            segs[i].gref = get_u32(req, off)
            segs[i].first_sect = get_u8(req, off + SEG_OFF_FIRST_SECT)
            segs[i].last_sect = get_u8(req, off + SEG_OFF_LAST_SECT)
    else:
        ind = pr.ind
        n_pages = (nseg + SEGS_PER_INDIRECT_FRAME - 1) // SEGS_PER_INDIRECT_FRAME
        scratch = ring.req_copy[BLKIF_RING_ENTRY_SIZE:]  # beside the request copy
        for k in range(n_pages):
            ind[k].gref = get_u32(req, IND_OFF_INDIRECT_GREFS + 4 * k)
            if _map_seg(be, ring, pgnt, mt, gnt, active, ind[k], True) < 0:
                _unmap_segs(ring, pgnt, mt, gnt, active, ind, k)
                return -1
        for i in range(nseg):
            if grant_page_read(mem, mt, ind[i // SEGS_PER_INDIRECT_FRAME].handle,
                               (i % SEGS_PER_INDIRECT_FRAME) * SEG_SIZE, scratch, 0,
                               SEG_SIZE) != 0:
                _unmap_segs(ring, pgnt, mt, gnt, active, ind, n_pages)
                return -1
            segs[i].gref = get_u32(scratch, 0)
            segs[i].first_sect = get_u8(scratch, SEG_OFF_FIRST_SECT)
            segs[i].last_sect = get_u8(scratch, SEG_OFF_LAST_SECT)
        _unmap_segs(ring, pgnt, mt, gnt, active, ind, n_pages)
    for i in range(nseg):
        first = np.int64(segs[i].first_sect)
        last = np.int64(segs[i].last_sect)
        if last >= SECTORS_PER_PAGE or last < first:
            return -1
        nr_sects += last - first + 1
    return nr_sects


@kernel(forceinline=True)
def dispatch_rw_block_io(be, ring, pending, pgnt, mt, gnt, active, mem, ev, vbd, disk, p):
    """blkback ``dispatch_rw_block_io``: check the private copy, map its grants, start the I/O.

    Every failing check (an indirect sub-op other than READ/WRITE, an unknown operation, 0
    segments outside a flush, more than 11 (or 256 indirect) segments, a segment past its
    page, a write to a read-only device, a range beyond the device, misalignment to the
    logical block size, a grant that does not map) answers ``BLKIF_RSP_ERROR`` and returns
    -EIO. Returns 0 when the I/O was started.
    """
    req = ring.req_copy
    op = get_u8(req, REQ_OFF_OPERATION)
    id = get_u64(req, REQ_OFF_ID)
    indirect = op == BLKIF_OP_INDIRECT
    real_op = get_u8(req, IND_OFF_INDIRECT_OP) if indirect else op  # read once
    st = ring.stats
    if indirect and real_op != BLKIF_OP_READ and real_op != BLKIF_OP_WRITE:
        return _fail_response(ring, pending, mem, ev, p, id, real_op)
    if real_op == BLKIF_OP_READ:
        st[ST_RD_REQ] += 1
    elif real_op == BLKIF_OP_WRITE:
        st[ST_WR_REQ] += 1
    elif real_op == BLKIF_OP_WRITE_BARRIER or real_op == BLKIF_OP_FLUSH_DISKCACHE:
        st[ST_F_REQ] += 1
    else:
        return _fail_response(ring, pending, mem, ev, p, id, real_op)
    is_flush = real_op == BLKIF_OP_WRITE_BARRIER or real_op == BLKIF_OP_FLUSH_DISKCACHE
    nseg = get_u16(req, IND_OFF_NR_SEGMENTS) if indirect else get_u8(req, REQ_OFF_NR_SEGMENTS)
    limit = MAX_INDIRECT_SEGMENTS if indirect else BLKIF_MAX_SEGMENTS_PER_REQUEST
    if (nseg == 0 and not is_flush) or nseg > limit:
        return _fail_response(ring, pending, mem, ev, p, id, real_op)
    pr = pending[p]
    nr_sects = _parse_segments(be, ring, pgnt, mt, gnt, active, mem, pr, req, indirect, nseg)
    if nr_sects < 0:
        return _fail_response(ring, pending, mem, ev, p, id, real_op)
    sector = np.int64(get_u64(req, REQ_OFF_SECTOR_NUMBER))
    if xen_vbd_translate(vbd, real_op != BLKIF_OP_READ, sector, nr_sects) != 0:
        return _fail_response(ring, pending, mem, ev, p, id, real_op)
    mask = vbd.sector_size // SECTOR_SIZE - 1
    segs = pr.segs
    for i in range(nseg):
        if (sector | (np.int64(segs[i].last_sect) - np.int64(segs[i].first_sect) + 1)) & mask:
            return _fail_response(ring, pending, mem, ev, p, id, real_op)
    readonly = real_op != BLKIF_OP_READ  # the device only reads the guest's pages
    for i in range(nseg):
        if _map_seg(be, ring, pgnt, mt, gnt, active, segs[i], readonly) < 0:
            _unmap_segs(ring, pgnt, mt, gnt, active, segs, i)
            return _fail_response(ring, pending, mem, ev, p, id, real_op)
    pr.id = id
    pr.operation = real_op
    pr.real_op = real_op
    pr.status = BLKIF_RSP_OKAY
    pr.nr_segs = nseg
    pr.sector_number = sector
    pr.nr_sects = nr_sects
    ring.inflight += 1
    if be.defer:
        pr.next = -1
        if ring.dq_count == 0:
            ring.dq_head = p
        else:
            pending[ring.dq_tail].next = p
        ring.dq_tail = p
        ring.dq_count += 1
    else:
        __end_block_io_op(be, ring, pending, pgnt, mt, gnt, active, mem, ev, vbd, disk, p)
    return 0


@kernel
def dispatch_discard_io(ring, mem, ev, vbd, disk):
    """blkback ``dispatch_discard_io``: check the range as a write and answer at once."""
    req = ring.req_copy
    id = get_u64(req, REQ_OFF_ID)
    sector = get_u64(req, REQ_OFF_SECTOR_NUMBER)  # both unsigned 64-bit, as on the ring
    nr_sects = get_u64(req, DISC_OFF_NR_SECTORS)
    ring.stats[ST_DS_REQ] += 1
    err = xen_vbd_translate(vbd, True, sector, nr_sects)
    if err == 0:  # the range lies inside the device, so both fit an int64
        vbd_discard(vbd, disk, np.int64(sector), np.int64(nr_sects))
    make_response(ring, mem, ev, id, BLKIF_OP_DISCARD, BLKIF_RSP_OKAY if err == 0
                  else BLKIF_RSP_ERROR)
    return err


@kernel
def dispatch_other_io(ring, pending, mem, ev, p):
    """blkback ``dispatch_other_io``: an unknown operation gets ``BLKIF_RSP_EOPNOTSUPP``."""
    req = ring.req_copy
    free_req(ring, pending, p)
    make_response(ring, mem, ev, get_u64(req, REQ_OFF_ID), get_u8(req, REQ_OFF_OPERATION),
                  BLKIF_RSP_EOPNOTSUPP)
    return -EIO


# --- device completion -------------------------------------------------------------------------


@kernel(forceinline=True)
def __end_block_io_op(be, ring, pending, pgnt, mt, gnt, active, mem, ev, vbd, disk, p):
    """The device has done ``pending_req`` ``p``: move the data, then ``__end_block_io_op``.

    The ramdisk copies between its memory and the mapped guest pages (a read writes into the
    guest's page, which fails for a read-only mapping); the null device moves nothing. Then
    the grants are released (persistent ones stay mapped), the response is made and the
    pending_req freed. Returns the response status.
    """
    pr = pending[p]
    segs = pr.segs
    nseg = np.int64(pr.nr_segs)
    status = np.int64(pr.status)
    if vbd.kind == VBD_RAMDISK and nseg > 0:
        off = pr.sector_number * SECTOR_SIZE
        for i in range(nseg):
            first = np.int64(segs[i].first_sect)
            nbytes = (np.int64(segs[i].last_sect) - first + 1) * SECTOR_SIZE
            if pr.real_op == BLKIF_OP_READ:
                if grant_page_write(mem, mt, segs[i].handle, first * SECTOR_SIZE, disk, off,
                                    nbytes) != 0:
                    status = BLKIF_RSP_ERROR
            elif grant_page_read(mem, mt, segs[i].handle, first * SECTOR_SIZE, disk, off,
                                 nbytes) != 0:
                status = BLKIF_RSP_ERROR
            off += nbytes
    if pr.real_op == BLKIF_OP_READ:
        ring.stats[ST_RD_SECT] += pr.nr_sects
    else:
        ring.stats[ST_WR_SECT] += pr.nr_sects
    _unmap_segs(ring, pgnt, mt, gnt, active, segs, nseg)
    make_response(ring, mem, ev, pr.id, pr.operation, status)
    free_req(ring, pending, p)
    ring.inflight -= 1
    return status


@kernel
def blkback_pop_dispatched(ring, pending):
    """Next ``pending_req`` handed to a deferred device on the ring (FIFO); -1 if none."""
    if ring.dq_count == 0:
        return -1
    p = np.int64(ring.dq_head)
    ring.dq_head = pending[p].next
    ring.dq_count -= 1
    return p


# --- the service loop --------------------------------------------------------------------------


@kernel(forceinline=True)
def __do_block_io_op(be, ring, pending, pgnt, mt, gnt, active, mem, ev, vbd, disk):
    """blkback ``__do_block_io_op``: consume what the producer index shows; return ``more``.

    Returns 1 when it stopped with work left (no free pending_req), 0 when it consumed all it
    could, -EACCES when the frontend's producer index ran more than ``RING_SIZE`` ahead (the
    ring is halted for good).
    """
    sring = mem[ring.sring:ring.sring + ring.sring_bytes]
    rc = np.int64(ring.req_cons)
    rp = sring_get(sring, REQ_PROD)  # then rmb: the acquire load
    if RING_REQUEST_PROD_OVERFLOW(ring, rp):
        ring.halted = 1
        ring.stats[BS_BOGUS] += 1
        return -EACCES
    more = 0
    consumed = 0
    req = ring.req_copy
    while rc != rp:
        if RING_REQUEST_CONS_OVERFLOW(ring, rc):
            break
        p = alloc_req(ring, pending)
        if p < 0:
            ring.stats[ST_OO_REQ] += 1
            more = 1
            break
        RING_COPY_REQUEST(sring, ring, rc, req)
        rc = (rc + 1) & MASK32
        ring.req_cons = rc  # before any response is made for it
        consumed += 1
        op = get_u8(req, REQ_OFF_OPERATION)
        if op == BLKIF_OP_DISCARD:
            free_req(ring, pending, p)
            if dispatch_discard_io(ring, mem, ev, vbd, disk) != 0:
                break
        elif op <= BLKIF_OP_FLUSH_DISKCACHE or op == BLKIF_OP_INDIRECT:
            if dispatch_rw_block_io(be, ring, pending, pgnt, mt, gnt, active, mem, ev, vbd,
                                    disk, p) != 0:
                break
        elif dispatch_other_io(ring, pending, mem, ev, p) != 0:
            break
    if consumed:
        ring.stats[BS_REQUESTS] += consumed
        ring.stats[BS_BATCHES] += 1
    return more


@kernel(forceinline=True)
def do_block_io_op(blkif, rings, pending, pgnt, maptrack, gnt, active, mem, ev, vbd, disk, r):
    """blkback ``do_block_io_op`` for ring ``r``: ``__do_block_io_op`` until
    ``RING_FINAL_CHECK_FOR_REQUESTS`` finds nothing (``req_event`` then asks for the next
    request's notification).

    Parameters
    ----------
    blkif, rings, pending, pgnt, maptrack : the device's records (module docstring)
    gnt, active, mem : the frontend domain's grant table, active entries and memory
    ev : the event-channel table
    vbd, disk : the device's record and the ramdisk's bytes
    r : int

    Returns
    -------
    int
        0 (idle, armed), 1 (work left: call again when a pending_req frees), or -EACCES
        (ring halted). A halted ring is never serviced again.
    """
    ring = rings[r]
    if ring.halted:
        return -EACCES
    be = blkif[0]
    pg = pgnt[r]
    mt = maptrack[r]
    v = vbd[0]
    sring = mem[ring.sring:ring.sring + ring.sring_bytes]
    while True:
        more = __do_block_io_op(be, ring, pending[r], pg, mt, gnt, active, mem, ev, v, disk)
        if more != 0:
            return more
        ring.stats[BS_FINAL_CHECKS] += 1
        if not RING_FINAL_CHECK_FOR_REQUESTS(sring, ring):
            return 0


@kernel
def complete_io(blkif, rings, pending, pgnt, maptrack, gnt, active, mem, ev, vbd, disk, r, p):
    """:func:`__end_block_io_op` of ring ``r``'s ``pending_req`` ``p`` (the deferred
    device's completion); returns the response status."""
    return __end_block_io_op(blkif[0], rings[r], pending[r], pgnt[r], maptrack[r], gnt,
                                 active, mem, ev, vbd[0], disk, p)


# --- the device, from Python ---------------------------------------------------------------------


class xen_blkif_device:
    """One connected blkback device: its record arrays, the frontend domain's grant table,
    active entries and memory, the event channels and the vbd, with checked Python wrappers.
    """

    def __init__(self, blkif, rings, pending, pgnt, maptrack, gnt, active, mem, evtchn, vbd):
        self.blkif, self.rings, self.pending = blkif, rings, pending
        self.pgnt, self.maptrack = pgnt, maptrack
        self.gnt, self.active, self.mem, self.evtchn = gnt, active, mem, evtchn
        self.vbd = vbd  # xbq.blkif.vbd.xen_vbd

    @property
    def nr_rings(self) -> int:
        return int(self.blkif[0]["nr_rings"])

    def args(self) -> tuple:
        """The arrays every kernel takes, in order (``do_block_io_op(*be.args(), r)``)."""
        return (self.blkif, self.rings, self.pending, self.pgnt, self.maptrack, self.gnt,
                self.active, self.mem, self.evtchn, self.vbd.vbd, self.vbd.disk)

    def arrays(self) -> Blkback:
        """The device's arrays by name (:data:`Blkback`), as the engines' kernels take them."""
        return Blkback(*self.args())

    def _ring(self, r: int) -> int:
        if not 0 <= r < self.nr_rings:
            raise XbqError(f"ring {r} out of range (device has {self.nr_rings})")
        return int(r)

    def do_block_io_op(self, r) -> int:
        """:func:`do_block_io_op` on ring ``r``."""
        return int(do_block_io_op(*self.args(), self._ring(r)))

    def pop_dispatched(self, r) -> int:
        """:func:`blkback_pop_dispatched` of ring ``r``."""
        r = self._ring(r)
        return int(blkback_pop_dispatched(self.rings[r], self.pending[r]))

    def complete_io(self, r, p) -> int:
        """:func:`complete_io` of ring ``r``'s ``pending_req`` ``p``."""
        return int(complete_io(*self.args(), self._ring(r), p))

    def sring(self, r: int) -> np.ndarray:
        """Ring ``r``'s shared page (the frontend's memory)."""
        ring = self.rings[self._ring(r)]
        return self.mem[int(ring["sring"]):int(ring["sring"]) + int(ring["sring_bytes"])]

    def stats(self) -> dict[str, int]:
        """The counters summed over rings, by name."""
        return dict(zip(BLKBACK_STATS, (int(v) for v in self.rings["stats"].sum(axis=0)),
                        strict=True))


def new_blkback(conn, vbd, *, defer: bool = False,
                max_persistent_grants: int = XEN_BLKIF_MAX_PGRANTS) -> xen_blkif_device:
    """Build blkback's per-ring state on a connected handshake (``connect_ring``'s second half).

    Each back ring attaches at the ``rsp_prod`` it reads from the shared page and is refused
    (``XbqError``) if ``req_prod - rsp_prod`` exceeds ``RING_SIZE``.

    Parameters
    ----------
    conn : xbq.blkif.negotiate.Connection
        A connected handshake.
    vbd : xbq.blkif.vbd.xen_vbd
        The device behind every ring.
    defer : bool
        Queue dispatched requests for the caller to complete (:func:`blkback_pop_dispatched`,
        :func:`complete_io`) instead of completing them inside ``do_block_io_op``.
    max_persistent_grants : int
        Per-ring cap of persistent grants (blkback's ``max_persistent_grants``, 1056).
    """
    if not conn.connected:
        raise XbqError(f"the device is not connected ({conn.error or 'handshake incomplete'})")
    nr_rings, nr_ents = conn.nr_rings, conn.nr_ents
    rings = np.zeros(nr_rings, XEN_BLKIF_RING_DTYPE)
    for r, ring in enumerate(conn.rings):
        hdr = ring.sring[:16].view(np.uint32)
        if (int(hdr[REQ_PROD]) - int(hdr[RSP_PROD])) & MASK32 > nr_ents:
            raise XbqError(f"ring {r}: req_prod - rsp_prod exceeds the ring size (-EIO)")
        rings["rsp_prod_pvt"][r] = rings["req_cons"][r] = hdr[RSP_PROD]  # BACK_RING_ATTACH
    rings["nr_ents"] = nr_ents
    rings["evtchn"] = [ring.back_slot for ring in conn.rings]
    rings["sring"] = [ring.first_frame << XEN_PAGE_SHIFT for ring in conn.rings]
    rings["sring_bytes"] = [ring.sring.size for ring in conn.rings]
    rings["pending_free"] = 0
    rings["pending_nfree"] = nr_ents
    rings["dq_head"] = rings["dq_tail"] = -1
    pending = np.zeros((nr_rings, nr_ents), PENDING_REQ_DTYPE)
    pending["next"] = np.arange(1, nr_ents + 1)
    pending["next"][:, -1] = -1
    handles = max_persistent_grants + nr_ents * (BLKIF_MAX_SEGMENTS_PER_REQUEST * 3 + 2)
    maptrack = np.zeros((nr_rings, handles), MAPTRACK_DTYPE)
    for r in range(nr_rings):
        maptrack[r] = new_maptrack(handles, rings[r])
    pgnt = np.zeros((nr_rings, conn.front.shared.size), PERSISTENT_GNT_DTYPE)
    pgnt["handle"] = -1
    blkif = np.zeros(1, XEN_BLKIF_DTYPE)
    blkif[0] = (nr_rings, nr_ents, int(bool(conn.features.get("feature_persistent"))),
                max_persistent_grants, conn.back.domid, conn.front.nr_pages, int(defer))
    return xen_blkif_device(blkif, rings, pending, pgnt, maptrack, conn.front.shared,
                            conn.front.active, conn.front.mem, conn.evtchn, vbd)
