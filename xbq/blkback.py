"""blkback: dom0's side of the blkif protocol (Linux ``drivers/block/xen-blkback/blkback.c``).

One :class:`xen_blkif` holds the device and every ring's state (``xen_blkif_ring`` in the
kernel) in NumPy arrays with a leading ``nr_rings`` axis: the back rings, the ``pending_req``
pool and its free list, the persistent-grant map (capped at ``max_persistent_grants`` = 1056 per
ring), the ring's grant handles, counters named after the kernel's ``st_*``.

:func:`do_block_io_op` is the unit of work of the per-ring thread ``xen_blkif_schedule``:
consume requests until the ring is empty (ending with ``RING_FINAL_CHECK_FOR_REQUESTS``), each
one copied into private memory first and validated on the copy (XSA-155), then dispatched to
the device; every consumed request gets exactly one response from :func:`make_response`,
error responses included. A frontend whose producer index runs more than ``RING_SIZE`` ahead
("bogus ring requests") halts that ring: no responses, :data:`EACCES` returned, the thread
parks; other rings carry on.

Devices complete synchronously (the native engine: null device or ramdisk, inside
``do_block_io_op``) or, with ``defer`` set, the dispatched ``pending_req`` indices wait in a
per-ring queue until the engine calls :func:`xen_blkbk_complete_io` (the discrete-event engine,
which models device time).

A malicious frontend cannot crash the backend: every index that comes from the ring is
checked before use (grant references against the granter's table, segment counts against the
arrays, sectors against the device), and a failing check becomes a ``BLKIF_RSP_ERROR``.

Not modelled: the 100 ms LRU purge of idle persistent grants, and the drain a
``WRITE_BARRIER`` waits for when requests are in flight in deferred mode (barriers are issued
as flushes).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from xbq._jit import kernel
from xbq.abi import (
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
)
from xbq.errors import XbqError
from xbq.evtchn import notify_remote_via_evtchn
from xbq.grant import (
    gnttab_map_grant_ref,
    gnttab_unmap_grant_ref,
    grant_page_read,
    grant_page_write,
    new_maptrack,
    xen_maptrack,
)
from xbq.ring import (
    BACK_RING_DTYPE,
    MASK32,
    REQ_PROD,
    RING_COPY_REQUEST,
    RING_FINAL_CHECK_FOR_REQUESTS,
    RING_GET_RESPONSE,
    RING_PUSH_RESPONSES_AND_CHECK_NOTIFY,
    RING_REQUEST_CONS_OVERFLOW,
    RING_REQUEST_PROD_OVERFLOW,
    RSP_PROD,
    blkif_back_ring,
    get_u8,
    get_u16,
    get_u32,
    get_u64,
    put_i16,
    put_u8,
    put_u64,
    sring_get,
)
from xbq.vbd import V_KIND, V_SECTOR_SIZE, VBD_RAMDISK, vbd_discard, xen_vbd_translate

EIO = 5
EACCES = 13

#: blkback module parameter ``max_persistent_grants``: per ring.
XEN_BLKIF_MAX_PGRANTS = 1056

PENDING_REQ_DTYPE = np.dtype([
    ("id", "<u8"),  # the frontend's id, echoed in the response
    ("operation", "u1"),  # the operation echoed (indirect_op for BLKIF_OP_INDIRECT)
    ("real_op", "u1"),  # what the device does: READ, WRITE, FLUSH_DISKCACHE, WRITE_BARRIER
    ("status", "<i2"),  # BLKIF_RSP_* once the device is done
    ("nr_segs", "<i4"),
    ("nr_indirect", "<i4"),  # indirect descriptor pages still mapped (persistent ones)
    ("sector_number", "<i8"),
    ("nr_sects", "<i8"),
])

#: One mapped segment of a pending_req: the grant and the device's share of it.
PENDING_SEG_DTYPE = np.dtype([
    ("gref", "<i4"), ("first_sect", "u1"), ("last_sect", "u1"), ("persistent", "i1"),
    ("handle", "<i4"),
])

# params (int64 vector)
BP_NR_RINGS, BP_NR_ENTS, BP_PERSISTENT, BP_MAX_PGRANTS, BP_DOMID, BP_DEFER = range(6)
N_BPARAMS = 6

# per-ring mutable state (int64[nr_rings, N_BSTATE])
BR_PENDING_FREE, BR_PERSISTENT_GNT_C, BR_HALTED, BR_INFLIGHT, BR_DQ_HEAD, BR_DQ_COUNT, \
    BR_OVERFLOW_MAX_GRANTS = range(7)
N_BSTATE = 7

#: Per-ring counters, int64[nr_rings, len(BLKBACK_STATS)]; the first seven are the kernel's.
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
)
(ST_RD_REQ, ST_WR_REQ, ST_OO_REQ, ST_F_REQ, ST_DS_REQ, ST_RD_SECT, ST_WR_SECT, BS_REQUESTS,
 BS_BATCHES, BS_FINAL_CHECKS, BS_RESPONSES, BS_ERRORS, BS_EOPNOTSUPP, BS_NOTIFY, BS_MAP_OPS,
 BS_UNMAP_OPS, BS_PERSISTENT_HITS, BS_BACKOFFS, BS_BOGUS) = range(len(BLKBACK_STATS))

xen_blkif = namedtuple("xen_blkif", [
    "srings", "back_pvt", "pending", "pending_seg", "pending_ind", "pending_free", "dispatch_q",
    "persistent_gnt", "pgnt_active", "mt", "req_copy", "ring_state", "params", "stats",
    "evtchn_port", "evtchn", "front_gnttab", "front_pages", "vbd",
])
xen_blkif.__doc__ = """A blkback device and its rings (arrays with a leading ``nr_rings`` axis).

srings : uint8[nr_rings, 4096 << order]          the mapped shared rings
back_pvt : BACK_RING_DTYPE[nr_rings]              rsp_prod_pvt, req_cons, nr_ents
pending : PENDING_REQ_DTYPE[nr_rings, nr_ents]    the pending_req pool (32 per ring page)
pending_seg : PENDING_SEG_DTYPE[nr_rings, nr_ents, 256]      mapped data segments
pending_ind : PENDING_SEG_DTYPE[nr_rings, nr_ents, MAX_INDIRECT_PAGES]  indirect pages
pending_free : int32[nr_rings, nr_ents]           free pending_req, a stack
dispatch_q : int32[nr_rings, nr_ents]             requests handed to a deferred device (FIFO)
persistent_gnt : int32[nr_rings, nr_grefs]        grant handle of each persistent grant, or -1
pgnt_active : int8[nr_rings, nr_grefs]            a persistent grant in use by a request
mt : xen_maptrack of [nr_rings, n] arrays          each ring's grant handles (nfree: [nr_rings])
req_copy : uint8[nr_rings, 120]                   the private copy of the request being handled,
                                                  then 8 bytes for one indirect segment
ring_state : int64[nr_rings, N_BSTATE]            see BR_*
params : int64[N_BPARAMS]                         see BP_*
stats : int64[nr_rings, len(BLKBACK_STATS)]
evtchn_port : int32[nr_rings]; evtchn : the event-channel table
front_gnttab, front_pages : the guest's grant table and memory (what the hypervisor maps)
vbd : xbq.vbd.xen_vbd
"""


# --- per-ring views ----------------------------------------------------------------------------


@kernel(inline="always")
def _back_ring(be, r):
    return blkif_back_ring(be.srings[r], be.back_pvt[r:r + 1])


@kernel(inline="always")
def _ring_maptrack(be, r):
    mt = be.mt
    return xen_maptrack(mt.ref[r], mt.frame[r], mt.readonly[r], mt.free[r], mt.nfree[r:r + 1])


# --- pending_req pool ----------------------------------------------------------------------------


@kernel(inline="always")
def alloc_req(be, r):
    """blkback ``alloc_req``: pop a free ``pending_req``; -1 when the pool is empty."""
    n = be.ring_state[r, BR_PENDING_FREE]
    if n == 0:
        return -1
    be.ring_state[r, BR_PENDING_FREE] = n - 1
    return np.int64(be.pending_free[r, n - 1])


@kernel(inline="always")
def free_req(be, r, pidx):
    """blkback ``free_req``: push ``pending_req`` ``pidx`` back on the free list."""
    n = be.ring_state[r, BR_PENDING_FREE]
    be.pending_free[r, n] = pidx
    be.ring_state[r, BR_PENDING_FREE] = n + 1


# --- responses -----------------------------------------------------------------------------------


@kernel(inline="always")
def make_response(be, r, id, op, status):
    """blkback ``make_response``: write one response into the next slot, push, notify.

    Writes ``id``, ``operation`` and ``status`` straight into slot ``rsp_prod_pvt`` (the
    padding is left alone: XSA-216), then ``RING_PUSH_RESPONSES_AND_CHECK_NOTIFY``. The caller
    holds the ring's ``blk_ring_lock``. Returns True if the frontend was notified.
    """
    br = _back_ring(be, r)
    p = br.pvt[0]
    off = RING_GET_RESPONSE(br, np.int64(p.rsp_prod_pvt))
    put_u64(br.sring, off + RSP_OFF_ID, id)
    put_u8(br.sring, off + RSP_OFF_OPERATION, op)
    put_i16(br.sring, off + RSP_OFF_STATUS, status)
    p.rsp_prod_pvt = (np.int64(p.rsp_prod_pvt) + 1) & MASK32
    st = be.stats[r]
    st[BS_RESPONSES] += 1
    if status == BLKIF_RSP_ERROR:
        st[BS_ERRORS] += 1
    elif status == BLKIF_RSP_EOPNOTSUPP:
        st[BS_EOPNOTSUPP] += 1
    if RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(br):
        notify_remote_via_evtchn(be.evtchn, be.evtchn_port[r])
        st[BS_NOTIFY] += 1
        return True
    return False


# --- grant mapping -----------------------------------------------------------------------------


@kernel(inline="always")
def _map_seg(be, r, seg, readonly):
    """Map ``seg.gref`` for ring ``r`` (``xen_blkbk_map`` for one grant); fill ``seg``.

    A grant already in the ring's persistent map is reused; otherwise it is mapped with a
    hypercall and, with persistent grants negotiated and the ring under its cap, kept.
    Persistent mappings are always writable. Returns 0 or a negative ``GNTST_*`` status.
    """
    gref = np.int64(seg.gref)
    persistent = be.params[BP_PERSISTENT] != 0
    seg.persistent = 0
    if gref < 0 or gref >= be.front_gnttab.shared.size:
        # Let the hypervisor refuse it (GNTST_bad_gntref) before it indexes anything.
        return gnttab_map_grant_ref(be.front_gnttab, gref, be.params[BP_DOMID], readonly,
                                    _ring_maptrack(be, r))
    if persistent:
        h = be.persistent_gnt[r, gref]
        if h >= 0 and be.pgnt_active[r, gref] == 0:
            be.pgnt_active[r, gref] = 1
            seg.handle = h
            seg.persistent = 1
            be.stats[r, BS_PERSISTENT_HITS] += 1
            return 0
    h = gnttab_map_grant_ref(be.front_gnttab, gref, be.params[BP_DOMID],
                             readonly and not persistent, _ring_maptrack(be, r))
    if h < 0:
        return h
    be.stats[r, BS_MAP_OPS] += 1
    seg.handle = h
    if persistent and be.persistent_gnt[r, gref] < 0:
        if be.ring_state[r, BR_PERSISTENT_GNT_C] < be.params[BP_MAX_PGRANTS]:
            be.persistent_gnt[r, gref] = h
            be.pgnt_active[r, gref] = 1
            be.ring_state[r, BR_PERSISTENT_GNT_C] += 1
            seg.persistent = 1
        else:
            be.ring_state[r, BR_OVERFLOW_MAX_GRANTS] = 1
    return 0


@kernel(inline="always")
def _unmap_seg(be, r, seg):
    """Release one segment's mapping: a persistent grant stays mapped, any other is unmapped."""
    if seg.persistent:
        be.pgnt_active[r, seg.gref] = 0
    else:
        gnttab_unmap_grant_ref(be.front_gnttab, _ring_maptrack(be, r), seg.handle)
        be.stats[r, BS_UNMAP_OPS] += 1


@kernel(inline="always")
def _unmap_segs(be, r, segs, n):
    for i in range(n):
        _unmap_seg(be, r, segs[i])


# --- dispatch ----------------------------------------------------------------------------------


@kernel
def _fail_response(be, r, pidx, id, op):
    """The common ``fail_response`` path: ERROR response, free the pending_req, back off."""
    make_response(be, r, id, op, BLKIF_RSP_ERROR)
    free_req(be, r, pidx)
    be.stats[r, BS_BACKOFFS] += 1  # msleep(1): the engines charge the time
    return -EIO


@kernel
def _parse_segments(be, r, pidx, req, indirect, nseg):
    """Read and check the segments (inline, or from the indirect pages); return sectors or -1.

    Each ``last_sect`` must be at most 7 and not below ``first_sect``. Indirect pages are
    mapped read-only (writable if persistent), read once per entry, and released again.
    """
    segs = be.pending_seg[r, pidx]
    nr_sects = 0
    if not indirect:
        for i in range(nseg):
            off = REQ_OFF_SEG + i * SEG_SIZE
            segs[i].gref = get_u32(req, off)
            segs[i].first_sect = get_u8(req, off + SEG_OFF_FIRST_SECT)
            segs[i].last_sect = get_u8(req, off + SEG_OFF_LAST_SECT)
    else:
        ind = be.pending_ind[r, pidx]
        n_pages = (nseg + SEGS_PER_INDIRECT_FRAME - 1) // SEGS_PER_INDIRECT_FRAME
        mt = _ring_maptrack(be, r)
        scratch = be.req_copy[r, BLKIF_RING_ENTRY_SIZE:]  # beside the request copy
        for k in range(n_pages):
            ind[k].gref = get_u32(req, IND_OFF_INDIRECT_GREFS + 4 * k)
            if _map_seg(be, r, ind[k], True) < 0:
                _unmap_segs(be, r, ind, k)
                return -1
        for i in range(nseg):
            if grant_page_read(be.front_pages, mt, ind[i // SEGS_PER_INDIRECT_FRAME].handle,
                               (i % SEGS_PER_INDIRECT_FRAME) * SEG_SIZE, scratch, 0,
                               SEG_SIZE) != 0:
                _unmap_segs(be, r, ind, n_pages)
                return -1
            segs[i].gref = get_u32(scratch, 0)
            segs[i].first_sect = get_u8(scratch, SEG_OFF_FIRST_SECT)
            segs[i].last_sect = get_u8(scratch, SEG_OFF_LAST_SECT)
        _unmap_segs(be, r, ind, n_pages)
    for i in range(nseg):
        first = np.int64(segs[i].first_sect)
        last = np.int64(segs[i].last_sect)
        if last >= SECTORS_PER_PAGE or last < first:
            return -1
        nr_sects += last - first + 1
    return nr_sects


@kernel
def dispatch_rw_block_io(be, r, pidx):
    """blkback ``dispatch_rw_block_io``: check the private copy, map its grants, start the I/O.

    Every failing check (an indirect sub-op other than READ/WRITE, an unknown operation, 0
    segments outside a flush, more than 11 (or 256 indirect) segments, a segment past its
    page, a write to a read-only device, a range beyond the device, misalignment to the
    logical block size, a grant that does not map) answers ``BLKIF_RSP_ERROR`` and returns
    -EIO. Returns 0 when the I/O was started.
    """
    req = be.req_copy[r]
    op = get_u8(req, REQ_OFF_OPERATION)
    id = get_u64(req, REQ_OFF_ID)
    indirect = op == BLKIF_OP_INDIRECT
    real_op = get_u8(req, IND_OFF_INDIRECT_OP) if indirect else op  # read once
    st = be.stats[r]
    if indirect and real_op != BLKIF_OP_READ and real_op != BLKIF_OP_WRITE:
        return _fail_response(be, r, pidx, id, real_op)
    if real_op == BLKIF_OP_READ:
        st[ST_RD_REQ] += 1
    elif real_op == BLKIF_OP_WRITE:
        st[ST_WR_REQ] += 1
    elif real_op == BLKIF_OP_WRITE_BARRIER or real_op == BLKIF_OP_FLUSH_DISKCACHE:
        st[ST_F_REQ] += 1
    else:
        return _fail_response(be, r, pidx, id, real_op)
    is_flush = real_op == BLKIF_OP_WRITE_BARRIER or real_op == BLKIF_OP_FLUSH_DISKCACHE
    nseg = get_u16(req, IND_OFF_NR_SEGMENTS) if indirect else get_u8(req, REQ_OFF_NR_SEGMENTS)
    limit = MAX_INDIRECT_SEGMENTS if indirect else BLKIF_MAX_SEGMENTS_PER_REQUEST
    if (nseg == 0 and not is_flush) or nseg > limit:
        return _fail_response(be, r, pidx, id, real_op)
    nr_sects = _parse_segments(be, r, pidx, req, indirect, nseg)
    if nr_sects < 0:
        return _fail_response(be, r, pidx, id, real_op)
    sector = np.int64(get_u64(req, REQ_OFF_SECTOR_NUMBER))
    if xen_vbd_translate(be.vbd, real_op != BLKIF_OP_READ, sector, nr_sects) != 0:
        return _fail_response(be, r, pidx, id, real_op)
    mask = be.vbd.params[V_SECTOR_SIZE] // SECTOR_SIZE - 1
    segs = be.pending_seg[r, pidx]
    for i in range(nseg):
        if (sector | (np.int64(segs[i].last_sect) - np.int64(segs[i].first_sect) + 1)) & mask:
            return _fail_response(be, r, pidx, id, real_op)
    readonly = real_op != BLKIF_OP_READ  # the device only reads the guest's pages
    for i in range(nseg):
        if _map_seg(be, r, segs[i], readonly) < 0:
            _unmap_segs(be, r, segs, i)
            return _fail_response(be, r, pidx, id, real_op)
    pr = be.pending[r, pidx]
    pr.id = id
    pr.operation = real_op
    pr.real_op = real_op
    pr.status = BLKIF_RSP_OKAY
    pr.nr_segs = nseg
    pr.sector_number = sector
    pr.nr_sects = nr_sects
    be.ring_state[r, BR_INFLIGHT] += 1
    if be.params[BP_DEFER]:
        rs = be.ring_state[r]
        be.dispatch_q[r, (rs[BR_DQ_HEAD] + rs[BR_DQ_COUNT]) % be.dispatch_q.shape[1]] = pidx
        rs[BR_DQ_COUNT] += 1
    else:
        xen_blkbk_complete_io(be, r, pidx)
    return 0


@kernel
def dispatch_discard_io(be, r):
    """blkback ``dispatch_discard_io``: check the range as a write and answer at once."""
    req = be.req_copy[r]
    id = get_u64(req, REQ_OFF_ID)
    sector = get_u64(req, REQ_OFF_SECTOR_NUMBER)  # both unsigned 64-bit, as on the ring
    nr_sects = get_u64(req, DISC_OFF_NR_SECTORS)
    be.stats[r, ST_DS_REQ] += 1
    err = xen_vbd_translate(be.vbd, True, sector, nr_sects)
    if err == 0:  # the range lies inside the device, so both fit an int64
        vbd_discard(be.vbd, np.int64(sector), np.int64(nr_sects))
    make_response(be, r, id, BLKIF_OP_DISCARD, BLKIF_RSP_OKAY if err == 0 else BLKIF_RSP_ERROR)
    return err


@kernel
def dispatch_other_io(be, r, pidx):
    """blkback ``dispatch_other_io``: an unknown operation gets ``BLKIF_RSP_EOPNOTSUPP``."""
    req = be.req_copy[r]
    free_req(be, r, pidx)
    make_response(be, r, get_u64(req, REQ_OFF_ID), get_u8(req, REQ_OFF_OPERATION),
                  BLKIF_RSP_EOPNOTSUPP)
    return -EIO


# --- device completion -------------------------------------------------------------------------


@kernel
def xen_blkbk_complete_io(be, r, pidx):
    """The device has done ``pending_req`` ``pidx``: move the data, then ``__end_block_io_op``.

    The ramdisk copies between its memory and the mapped guest pages (a read writes into the
    guest's page, which fails for a read-only mapping); the null device moves nothing. Then
    the grants are released (persistent ones stay mapped), the response is made and the
    pending_req freed. Returns the response status.
    """
    pr = be.pending[r, pidx]
    segs = be.pending_seg[r, pidx]
    nseg = np.int64(pr.nr_segs)
    status = np.int64(pr.status)
    if be.vbd.params[V_KIND] == VBD_RAMDISK and nseg > 0:
        mt = _ring_maptrack(be, r)
        disk = be.vbd.disk
        off = pr.sector_number * SECTOR_SIZE
        for i in range(nseg):
            first = np.int64(segs[i].first_sect)
            nbytes = (np.int64(segs[i].last_sect) - first + 1) * SECTOR_SIZE
            if pr.real_op == BLKIF_OP_READ:
                if grant_page_write(be.front_pages, mt, segs[i].handle, first * SECTOR_SIZE,
                                    disk, off, nbytes) != 0:
                    status = BLKIF_RSP_ERROR
            elif grant_page_read(be.front_pages, mt, segs[i].handle, first * SECTOR_SIZE,
                                 disk, off, nbytes) != 0:
                status = BLKIF_RSP_ERROR
            off += nbytes
    if pr.real_op == BLKIF_OP_READ:
        be.stats[r, ST_RD_SECT] += pr.nr_sects
    else:
        be.stats[r, ST_WR_SECT] += pr.nr_sects
    _unmap_segs(be, r, segs, nseg)
    make_response(be, r, pr.id, pr.operation, status)
    free_req(be, r, pidx)
    be.ring_state[r, BR_INFLIGHT] -= 1
    return status


@kernel
def blkback_pop_dispatched(be, r):
    """Next ``pending_req`` handed to a deferred device on ring ``r`` (FIFO); -1 if none."""
    rs = be.ring_state[r]
    if rs[BR_DQ_COUNT] == 0:
        return -1
    pidx = np.int64(be.dispatch_q[r, rs[BR_DQ_HEAD]])
    rs[BR_DQ_HEAD] = (rs[BR_DQ_HEAD] + 1) % be.dispatch_q.shape[1]
    rs[BR_DQ_COUNT] -= 1
    return pidx


# --- the service loop --------------------------------------------------------------------------


@kernel
def __do_block_io_op(be, r):
    """blkback ``__do_block_io_op``: consume what the producer index shows; return ``more``.

    Returns 1 when it stopped with work left (no free pending_req), 0 when it consumed all it
    could, -EACCES when the frontend's producer index ran more than ``RING_SIZE`` ahead (the
    ring is halted for good).
    """
    br = _back_ring(be, r)
    p = br.pvt[0]
    rc = np.int64(p.req_cons)
    rp = sring_get(br.sring, REQ_PROD)  # then rmb: the acquire load
    if RING_REQUEST_PROD_OVERFLOW(br, rp):
        be.ring_state[r, BR_HALTED] = 1
        be.stats[r, BS_BOGUS] += 1
        return -EACCES
    more = 0
    consumed = 0
    req = be.req_copy[r]
    while rc != rp:
        if RING_REQUEST_CONS_OVERFLOW(br, rc):
            break
        pidx = alloc_req(be, r)
        if pidx < 0:
            be.stats[r, ST_OO_REQ] += 1
            more = 1
            break
        RING_COPY_REQUEST(br, rc, req)
        rc = (rc + 1) & MASK32
        p.req_cons = rc  # before any response is made for it
        consumed += 1
        op = get_u8(req, REQ_OFF_OPERATION)
        if op == BLKIF_OP_DISCARD:
            free_req(be, r, pidx)
            if dispatch_discard_io(be, r) != 0:
                break
        elif op <= BLKIF_OP_FLUSH_DISKCACHE or op == BLKIF_OP_INDIRECT:
            if dispatch_rw_block_io(be, r, pidx) != 0:
                break
        elif dispatch_other_io(be, r, pidx) != 0:
            break
    if consumed:
        be.stats[r, BS_REQUESTS] += consumed
        be.stats[r, BS_BATCHES] += 1
    return more


@kernel
def do_block_io_op(be, r):
    """blkback ``do_block_io_op``: ``__do_block_io_op`` until ``RING_FINAL_CHECK_FOR_REQUESTS``
    finds nothing (``req_event`` then asks for the next request's notification).

    Returns 0 (idle, armed), 1 (work left: call again when a pending_req frees), or -EACCES
    (ring halted). A halted ring is never serviced again.
    """
    if be.ring_state[r, BR_HALTED]:
        return -EACCES
    br = _back_ring(be, r)
    while True:
        more = __do_block_io_op(be, r)
        if more != 0:
            return more
        be.stats[r, BS_FINAL_CHECKS] += 1
        if not RING_FINAL_CHECK_FOR_REQUESTS(br):
            return 0


# --- construction (Python, at connect time) -----------------------------------------------------


def new_blkback(conn, vbd, *, defer: bool = False,
                max_persistent_grants: int = XEN_BLKIF_MAX_PGRANTS) -> xen_blkif:
    """Build blkback's per-ring state on a connected handshake (``connect_ring``'s second half).

    Each back ring attaches at the ``rsp_prod`` it reads from the shared page and is refused
    (``XbqError``) if ``req_prod - rsp_prod`` exceeds ``RING_SIZE``.

    Parameters
    ----------
    conn : xbq.xenbus.Connection
        A connected handshake.
    vbd : xbq.vbd.xen_vbd
        The device behind every ring.
    defer : bool
        Queue dispatched requests for the caller to complete (:func:`blkback_pop_dispatched`,
        :func:`xen_blkbk_complete_io`) instead of completing them inside ``do_block_io_op``.
    max_persistent_grants : int
        Per-ring cap of persistent grants (blkback's ``max_persistent_grants``, 1056).
    """
    if not conn.connected:
        raise XbqError(f"the device is not connected ({conn.error or 'handshake incomplete'})")
    nr_rings, nr_ents = conn.nr_rings, conn.nr_ents
    npages = 1 << conn.ring_page_order
    first = conn.rings[0].first_frame
    if any(ring.first_frame != first + k * npages for k, ring in enumerate(conn.rings)):
        raise XbqError("ring pages are not contiguous in guest memory; cannot build a view")
    srings = conn.front.pages[first:first + nr_rings * npages].reshape(nr_rings, -1)
    back_pvt = np.zeros(nr_rings, BACK_RING_DTYPE)
    for r in range(nr_rings):
        hdr = srings[r, :16].view(np.uint32)
        if (int(hdr[REQ_PROD]) - int(hdr[RSP_PROD])) & MASK32 > nr_ents:
            raise XbqError(f"ring {r}: req_prod - rsp_prod exceeds the ring size (-EIO)")
        back_pvt[r] = (hdr[RSP_PROD], hdr[RSP_PROD], nr_ents)
    nr_grefs = conn.front.gnttab.shared.size
    handles = max_persistent_grants + nr_ents * (BLKIF_MAX_SEGMENTS_PER_REQUEST * 3 + 2)
    one = new_maptrack(handles)
    mt = xen_maptrack(np.tile(one.ref, (nr_rings, 1)), np.tile(one.frame, (nr_rings, 1)),
                      np.tile(one.readonly, (nr_rings, 1)), np.tile(one.free, (nr_rings, 1)),
                      np.full(nr_rings, handles, np.int64))
    params = np.zeros(N_BPARAMS, np.int64)
    params[[BP_NR_RINGS, BP_NR_ENTS, BP_PERSISTENT, BP_MAX_PGRANTS, BP_DOMID, BP_DEFER]] = [
        nr_rings, nr_ents, int(bool(conn.features.get("feature_persistent"))),
        max_persistent_grants, conn.back.domid, int(defer)]
    ring_state = np.zeros((nr_rings, N_BSTATE), np.int64)
    ring_state[:, BR_PENDING_FREE] = nr_ents
    return xen_blkif(
        srings=srings, back_pvt=back_pvt,
        pending=np.zeros((nr_rings, nr_ents), PENDING_REQ_DTYPE),
        pending_seg=np.zeros((nr_rings, nr_ents, MAX_INDIRECT_SEGMENTS), PENDING_SEG_DTYPE),
        pending_ind=np.zeros((nr_rings, nr_ents, MAX_INDIRECT_PAGES), PENDING_SEG_DTYPE),
        pending_free=np.tile(np.arange(nr_ents - 1, -1, -1, dtype=np.int32), (nr_rings, 1)),
        dispatch_q=np.zeros((nr_rings, nr_ents), np.int32),
        persistent_gnt=np.full((nr_rings, nr_grefs), -1, np.int32),
        pgnt_active=np.zeros((nr_rings, nr_grefs), np.int8), mt=mt,
        req_copy=np.zeros((nr_rings, BLKIF_RING_ENTRY_SIZE + SEG_SIZE), np.uint8),
        ring_state=ring_state,
        params=params, stats=np.zeros((nr_rings, len(BLKBACK_STATS)), np.int64),
        evtchn_port=np.array([ring.back_port for ring in conn.rings], np.int32),
        evtchn=conn.evtchn, front_gnttab=conn.front.gnttab, front_pages=conn.front.pages,
        vbd=vbd)


def xen_blkbk_free_persistent(be: xen_blkif) -> int:
    """Unmap every persistent grant of every ring (``free_persistent_gnts``); return how many."""
    count = 0
    for r in range(be.persistent_gnt.shape[0]):
        for gref in np.flatnonzero(be.persistent_gnt[r] >= 0):
            seg = np.zeros(1, PENDING_SEG_DTYPE)
            seg["handle"] = be.persistent_gnt[r, gref]
            _unmap_segs(be, r, seg, 1)
            be.persistent_gnt[r, gref] = -1
            count += 1
        be.ring_state[r, BR_PERSISTENT_GNT_C] = 0
    return count


def blkback_stats(be: xen_blkif) -> dict[str, int]:
    """Return the counters summed over rings, by name."""
    return dict(zip(BLKBACK_STATS, (int(v) for v in be.stats.sum(axis=0)), strict=True))
