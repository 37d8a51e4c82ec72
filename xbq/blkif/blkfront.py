"""blkfront: the guest's side of the blkif protocol (Linux ``drivers/block/xen-blkfront.c``).

The state is one structured record array per lifetime, as the kernel has one struct each:

* ``info`` (:data:`BLKFRONT_INFO_DTYPE`, one record): ``struct blkfront_info``, the device
  (connected state, negotiated features, geometry);
* ``rinfo`` (:data:`BLKFRONT_RING_INFO_DTYPE`, one per ring): ``struct blkfront_ring_info``
  (the front ring's private indices, where the shared ring lies in guest memory, its event
  channel, the id free list head, the grant list, counters);
* ``shadow`` (:data:`BLK_SHADOW_DTYPE`, ``[ring, id]``): ``struct blk_shadow``, each
  request id's image of the request, its status and the grants it uses;
* ``grants`` (:data:`GRANT_DTYPE`, ``[ring, entry]``): ``struct grant``, the ring's grant
  pool (reference, own page, list link).

With the guest's grant table (``gnt``, :data:`xbq.xen.abi.GRANT_ENTRY_V1_DTYPE`) and memory
(``mem``, :mod:`xbq.xen.memory`), those are every array the kernels take:

* :func:`blkif_queue_request` builds one request (grants, segments, indirect descriptors
  when a request has more than 11 segments) in the shadow copy and copies it into the ring
  slot;
* :func:`flush_requests` publishes it and notifies the backend if ``req_event`` asks for it;
* :func:`blkif_interrupt` consumes responses, accepting one only if its id is waiting and
  its operation matches, completes them (read data copied out of persistent grants, grants
  kept or ended) and recycles ids.

Locking is the caller's: the legacy driver holds one ``io_lock`` around both paths, blk-mq's
per-ring driver holds that ring's ``ring_lock``. Nothing here allocates or touches Python
objects, so it runs in ``nogil`` threads. :class:`blkfront_device` is the Python handle of one
device (its arrays, and checked wrappers around the kernels).

Behaviour follows the hardened current driver where the 2016 code was lax (copied responses,
id/op checks, ``RING_RESPONSE_PROD_OVERFLOW``, the error state), and the 2015–2016 driver
elsewhere (persistent grants on by default, LIFO reuse of grants the backend keeps mapped).
Grant references are claimed for every pool entry when the device connects, rather than on
first use; the pool's size and reuse order are the kernel's.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from xbq._jit import kernel
from xbq.errors import XbqError
from xbq.xen.abi import (
    BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_OP_DISCARD,
    BLKIF_OP_INDIRECT,
    BLKIF_OP_READ,
    BLKIF_OP_WRITE,
    BLKIF_RING_ENTRY_SIZE,
    DISC_OFF_NR_SECTORS,
    IND_OFF_HANDLE,
    IND_OFF_INDIRECT_GREFS,
    IND_OFF_INDIRECT_OP,
    IND_OFF_NR_SEGMENTS,
    MAX_INDIRECT_SEGMENTS,
    REQ_OFF_HANDLE,
    REQ_OFF_ID,
    REQ_OFF_NR_SEGMENTS,
    REQ_OFF_OPERATION,
    REQ_OFF_SECTOR_NUMBER,
    REQ_OFF_SEG,
    RSP_OFF_ID,
    RSP_OFF_OPERATION,
    RSP_OFF_STATUS,
    SECTORS_PER_PAGE,
    SEG_OFF_FIRST_SECT,
    SEG_OFF_LAST_SECT,
    SEG_SIZE,
    SEGS_PER_INDIRECT_FRAME,
    XEN_PAGE_SHIFT,
    ring_size,
)
from xbq.xen.evtchn import notify_remote_via_evtchn
from xbq.xen.grant import (
    GTF_permit_access,
    gnttab_end_foreign_access_ref,
    gnttab_grant_foreign_access_ref,
    gnttab_query_foreign_access,
)
from xbq.xen.memory import (
    MASK32,
    copy_bytes,
    get_i16,
    get_u8,
    get_u64,
    put_u8,
    put_u16,
    put_u32,
    put_u64,
    zero_bytes,
)
from xbq.xen.ring import (
    RING_COPY_RESPONSE,
    RING_FINAL_CHECK_FOR_RESPONSES,
    RING_FULL,
    RING_GET_REQUEST,
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY,
    RING_RESPONSE_PROD_OVERFLOW,
    RSP_EVENT,
    RSP_PROD,
    sring_get,
    sring_set,
)

# --- enum blk_req_status, and the id free list ------------------------------------------------
REQ_PROCESSING = 0
REQ_WAITING = 1
REQ_DONE = 2
REQ_ERROR = 3
REQ_EOPNOTSUPP = 4

#: End marker of the id free list (``shadow[last].req.u.rw.id``).
SHADOW_FREELIST_END = 0x0FFFFFFF
#: Debug value written into a popped entry's id (``get_id_from_freelist``).
SHADOW_ID_IN_USE = 0x0FFFFFEE

#: Grants one request may hold: the data segments (at most what blkback serves) and the
#: indirect descriptor pages listing them.
BLKFRONT_MAX_GREFS = MAX_INDIRECT_SEGMENTS + -(-MAX_INDIRECT_SEGMENTS // SEGS_PER_INDIRECT_FRAME)

# --- info->connected ---------------------------------------------------------------------------
BLKIF_STATE_DISCONNECTED = 0
BLKIF_STATE_CONNECTED = 1
BLKIF_STATE_SUSPENDED = 2
BLKIF_STATE_ERROR = 3

# blkif_queue_request return codes (>= 0 is the request id)
#: A blkfront device's arrays by name, as the engines' kernels take them in one argument:
#: its records, the guest's grant table and memory, the event channels.
Blkfront = namedtuple("Blkfront", "info rinfo shadow grants gnt mem evtchn")

#: What :func:`blkif_interrupt` hands back for each request it completed: the caller's cookie
#: and the response's status.
DONE_DTYPE = np.dtype([("tag", "<i8"), ("status", "<i8")], align=True)

BLKIF_QUEUE_BUSY = -1  # RING_FULL: blk-mq stops the hardware queue
BLKIF_QUEUE_INVALID = -2  # more segments than the device's limits allow (a caller bug)
BLKIF_QUEUE_DISCONNECTED = -3

#: Per-ring counters (``rinfo["stats"]``), by index.
BLKFRONT_STATS = (
    "requests",  # requests placed on the ring
    "segments",  # data segments (grants) carried
    "indirect_requests",  # requests sent as BLKIF_OP_INDIRECT
    "ring_full",  # blkif_queue_request found the ring full
    "notify",  # notifications sent to the backend (flush_requests)
    "flushes",  # flush_requests calls (one per blk-mq request)
    "interrupts",  # blkif_interrupt calls that found responses
    "spurious",  # blkif_interrupt calls that found none
    "responses",  # responses consumed
    "errors",  # responses with a status other than OKAY
    "grants_new",  # grant entries (re)granted to the backend
    "grants_reused",  # persistent grants reused without a new grant
    "grants_ended",  # grants ended on completion
)
(FS_REQUESTS, FS_SEGMENTS, FS_INDIRECT, FS_RING_FULL, FS_NOTIFY, FS_FLUSHES, FS_INTERRUPTS,
 FS_SPURIOUS, FS_RESPONSES, FS_ERRORS, FS_GRANTS_NEW, FS_GRANTS_REUSED,
 FS_GRANTS_ENDED) = range(len(BLKFRONT_STATS))

#: ``struct blkfront_info``: the device, one record.
BLKFRONT_INFO_DTYPE = np.dtype([
    ("connected", "<i8"),  # BLKIF_STATE_*
    ("nr_rings", "<i8"),
    ("nr_ents", "<i8"),  # RING_SIZE of every ring
    ("feature_persistent", "<i8"),
    ("max_indirect_segments", "<i8"),  # 0: no indirect requests (11 segments at most)
    ("max_grefs", "<i8"),  # grants one request may need (data + indirect pages)
    ("nr_grants", "<i8"),  # entries of each ring's grant pool
    ("backend_id", "<i8"),  # the backend's domain
    ("handle", "<i8"),  # virtual-device, echoed in every request
    ("sectors", "<i8"),  # capacity (512-byte sectors)
    ("touch_data", "<i8"),  # copy data to and from the persistent grant pages
], align=True)

#: ``struct blkfront_ring_info``: one per ring (hardware queue).
BLKFRONT_RING_INFO_DTYPE = np.dtype([
    ("req_prod_pvt", "<u4"), ("rsp_cons", "<u4"), ("nr_ents", "<u4"),  # the front ring
    ("evtchn", "<i4"),  # the ring's event channel: the frontend's port, as its slot
    ("sring", "<i8"),  # byte offset of the shared ring in guest memory
    ("sring_bytes", "<i8"),  # its size, 4096 << ring-page-order
    ("shadow_free", "<i8"),  # head of the id free list
    ("gnt_head", "<i4"), ("gnt_tail", "<i4"), ("gnt_count", "<i4"),  # the grant list
    ("persistent_gnts_c", "<i4"),  # entries on the list still mapped by the backend
    ("inflight", "<i8"),  # requests on the ring, not yet completed
    ("rsp_copy", "u1", 16),  # RING_COPY_RESPONSE's target
    ("stats", "<i8", len(BLKFRONT_STATS)),
], align=True)

#: ``struct blk_shadow``: one per request id of a ring.
BLK_SHADOW_DTYPE = np.dtype([
    ("req", "u1", BLKIF_RING_ENTRY_SIZE),  # the request image; free ids link the free list
    ("request", "<i8"),  # the caller's cookie for the I/O (-1: no request attached)
    ("buf_pfn", "<i8"),  # first guest page of the I/O buffer (-1: none)
    ("nr_sects", "<i4"),  # 512-byte sectors moved
    ("num_grants", "<i2"),  # data grants used (one per segment)
    ("num_indirect", "<i2"),  # indirect descriptor pages used
    ("status", "i1"),  # enum blk_req_status
    ("operation", "u1"),  # BLKIF_OP_* sent on the ring
    ("indirect_op", "u1"),  # READ/WRITE inside BLKIF_OP_INDIRECT
    ("grants_used", "<i4", BLKFRONT_MAX_GREFS),  # grant entries: data, then indirect pages
], align=True)

#: ``struct grant``: one entry of a ring's grant pool.
GRANT_DTYPE = np.dtype([("gref", "<i4"), ("next", "<i4"), ("pfn", "<i8")], align=True)


# --- the id free list --------------------------------------------------------------------------


@kernel
def get_id_from_freelist(ri, shadow):
    """blkfront ``get_id_from_freelist``: pop a free shadow id (the caller checked RING_FULL)."""
    free = ri.shadow_free
    img = shadow[free].req
    ri.shadow_free = np.int64(get_u64(img, REQ_OFF_ID))
    put_u64(img, REQ_OFF_ID, SHADOW_ID_IN_USE)
    return free


@kernel
def add_id_to_freelist(ri, shadow, id):
    """blkfront ``add_id_to_freelist``: push ``id`` back; False if it was not in use."""
    s = shadow[id]
    if np.int64(get_u64(s.req, REQ_OFF_ID)) != id or s.request < 0:
        return False
    put_u64(s.req, REQ_OFF_ID, ri.shadow_free)
    s.request = -1
    ri.shadow_free = id
    return True


# --- the grant list ----------------------------------------------------------------------------


@kernel
def get_grant(inf, ri, grants, gnt, data_pfn):
    """blkfront ``get_grant``: take the first entry of the ring's grant list and make sure the
    backend may map its page.

    With persistent grants the entry's own page is granted once and kept; without, the
    guest's page ``data_pfn`` is granted for this request (or the entry's own page for an
    indirect descriptor, ``data_pfn < 0``). Returns the entry.
    """
    g = np.int64(ri.gnt_head)
    e = grants[g]
    ri.gnt_head = e.next
    if ri.gnt_head < 0:
        ri.gnt_tail = -1
    ri.gnt_count -= 1
    if inf.feature_persistent and gnt[e.gref].flags & GTF_permit_access:
        # still granted: a persistent grant kept at the head of the list
        ri.persistent_gnts_c -= 1
        ri.stats[FS_GRANTS_REUSED] += 1
        return g
    frame = e.pfn if inf.feature_persistent or data_pfn < 0 else data_pfn
    gnttab_grant_foreign_access_ref(gnt, e.gref, inf.backend_id, frame, False)
    ri.stats[FS_GRANTS_NEW] += 1
    return g


@kernel
def put_grant(inf, ri, grants, gnt, g):
    """Return grant entry ``g`` after completion, as ``blkif_completion`` does.

    A grant the backend still maps is kept at the head of the list and counted persistent;
    any other is ended and put at the tail. Returns False if a grant is still mapped by a
    backend that did not negotiate persistence (a protocol error).
    """
    e = grants[g]
    if inf.feature_persistent and gnttab_query_foreign_access(gnt, e.gref):
        e.next = ri.gnt_head
        ri.gnt_head = g
        if ri.gnt_tail < 0:
            ri.gnt_tail = g
        ri.gnt_count += 1
        ri.persistent_gnts_c += 1
        return True
    if not gnttab_end_foreign_access_ref(gnt, e.gref):
        return False
    ri.stats[FS_GRANTS_ENDED] += 1
    e.next = -1
    if ri.gnt_tail < 0:
        ri.gnt_head = g
    else:
        grants[ri.gnt_tail].next = g
    ri.gnt_tail = g
    ri.gnt_count += 1
    return True


# --- submission --------------------------------------------------------------------------------


@kernel(forceinline=True)
def blkif_ring_get_request(ri, sh, tag):
    """blkfront ``blkif_ring_get_request``: take a free id for the caller's request ``tag``
    and clear its image in the shadow (the slot is written when the request is complete)."""
    id = get_id_from_freelist(ri, sh)
    s = sh[id]
    zero_bytes(s.req, 0, BLKIF_RING_ENTRY_SIZE)
    s.request = tag
    s.status = REQ_WAITING
    s.num_grants = 0
    s.num_indirect = 0
    put_u64(s.req, REQ_OFF_ID, id)
    return id


@kernel(forceinline=True)
def blkif_queue_discard_req(s, sector, nr_sects):
    """blkfront ``blkif_queue_discard_req``: a discard of ``nr_sects`` from ``sector``."""
    img = s.req
    put_u8(img, REQ_OFF_OPERATION, BLKIF_OP_DISCARD)
    put_u64(img, REQ_OFF_SECTOR_NUMBER, sector)
    put_u64(img, DISC_OFF_NR_SECTORS, nr_sects)
    s.operation = BLKIF_OP_DISCARD
    s.indirect_op = BLKIF_OP_DISCARD


@kernel(forceinline=True)
def blkif_setup_rw_req_grant(inf, ri, s, gr, gnt, mem, operation, buf_pfn, i, nseg, last):
    """blkfront ``blkif_setup_rw_req_grant``: grant segment ``i`` (sectors ``0..last`` of
    page ``buf_pfn + i``) and write its descriptor, into the request or, for an indirect
    request, into its descriptor page; copy write data into a persistent grant's page."""
    g = get_grant(inf, ri, gr, gnt, buf_pfn + i)
    s.grants_used[i] = g
    if inf.touch_data and inf.feature_persistent and operation != BLKIF_OP_READ:
        copy_bytes(mem, gr[g].pfn << XEN_PAGE_SHIFT, mem, (buf_pfn + i) << XEN_PAGE_SHIFT,
                   (last + 1) * 512)
    if s.num_indirect > 0:  # the segment goes into the descriptor page
        ind = gr[s.grants_used[nseg + i // SEGS_PER_INDIRECT_FRAME]]
        _put_segment(mem, (ind.pfn << XEN_PAGE_SHIFT) + (i % SEGS_PER_INDIRECT_FRAME)
                     * SEG_SIZE, gr[g].gref, last)
    else:
        _put_segment(s.req, REQ_OFF_SEG + i * SEG_SIZE, gr[g].gref, last)


@kernel(forceinline=True)
def _put_segment(buf, off, gref, last):
    """A ``blkif_request_segment`` at ``off``: sectors 0 to ``last`` of granted page
    ``gref``."""
    put_u32(buf, off, gref)
    put_u8(buf, off + SEG_OFF_FIRST_SECT, 0)
    put_u8(buf, off + SEG_OFF_LAST_SECT, last)


@kernel(forceinline=True)
def blkif_queue_rw_req(inf, ri, s, gr, gnt, mem, operation, sector, nr_sects, nseg, buf_pfn):
    """blkfront ``blkif_queue_rw_req``: a read or write of ``nseg`` page segments, direct
    (up to 11) or through indirect descriptor pages."""
    img = s.req
    put_u64(img, REQ_OFF_SECTOR_NUMBER, sector)
    indirect = nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST
    s.indirect_op = operation
    s.operation = BLKIF_OP_INDIRECT if indirect else operation
    put_u8(img, REQ_OFF_OPERATION, s.operation)
    if indirect:
        put_u8(img, IND_OFF_INDIRECT_OP, operation)
        put_u16(img, IND_OFF_NR_SEGMENTS, nseg)
        put_u16(img, IND_OFF_HANDLE, inf.handle)
        n_ind = (nseg + SEGS_PER_INDIRECT_FRAME - 1) // SEGS_PER_INDIRECT_FRAME
        for k in range(n_ind):
            g = get_grant(inf, ri, gr, gnt, -1)
            s.grants_used[nseg + k] = g
            put_u32(img, IND_OFF_INDIRECT_GREFS + 4 * k, gr[g].gref)
        s.num_indirect = n_ind
        ri.stats[FS_INDIRECT] += 1
    else:
        put_u8(img, REQ_OFF_NR_SEGMENTS, nseg)
        put_u16(img, REQ_OFF_HANDLE, inf.handle)
    left = nr_sects
    for i in range(nseg):
        last = (left if left < SECTORS_PER_PAGE else SECTORS_PER_PAGE) - 1
        left -= last + 1
        blkif_setup_rw_req_grant(inf, ri, s, gr, gnt, mem, operation, buf_pfn, i, nseg, last)
    s.num_grants = nseg
    ri.stats[FS_SEGMENTS] += nseg


@kernel(forceinline=True)
def blkif_queue_request(info, rinfo, shadow, grants, gnt, mem, r, operation, sector, nr_sects,
                        buf_pfn, tag):
    """blkfront ``blkif_queue_request``: put one I/O on ring ``r``; return its id.

    Parameters
    ----------
    info, rinfo, shadow, grants : the device's records (see the module docstring)
    gnt, mem : the guest's grant table and memory
    r : int
        Ring (hardware queue) index.
    operation : int
        ``BLKIF_OP_READ``, ``_WRITE``, ``_FLUSH_DISKCACHE``, ``_WRITE_BARRIER`` or ``_DISCARD``.
    sector : int
        First 512-byte sector on the virtual disk.
    nr_sects : int
        Length in 512-byte sectors (0 for a pure flush); at most ``max_sectors``.
    buf_pfn : int
        First of the contiguous guest pages holding the data (ignored for discard/flush).
    tag : int
        The caller's cookie (>= 0), handed back by :func:`blkif_interrupt`.

    Returns
    -------
    int
        The request id (shadow index, >= 0), or ``BLKIF_QUEUE_BUSY`` (ring full: the caller
        stops its queue and retries after an interrupt), ``BLKIF_QUEUE_INVALID`` (exceeds the
        device limits), ``BLKIF_QUEUE_DISCONNECTED``.

    Notes
    -----
    Changes ``rinfo[r]`` (the ring, id list, grant list, counters), ``shadow[r]``,
    ``grants[r]``, the guest's grant entries and the slot bytes; with persistent grants and
    ``touch_data`` it copies write data into the granted pages. The request is built in its
    shadow (:func:`blkif_ring_get_request`, then :func:`blkif_queue_discard_req` or
    :func:`blkif_queue_rw_req`) and copied into the slot whole, as current blkfront does; it
    is not visible to the backend until :func:`flush_requests`.
    """
    inf = info[0]
    if inf.connected != BLKIF_STATE_CONNECTED:
        return BLKIF_QUEUE_DISCONNECTED
    ri = rinfo[r]
    if RING_FULL(ri):
        ri.stats[FS_RING_FULL] += 1
        return BLKIF_QUEUE_BUSY
    is_discard = operation == BLKIF_OP_DISCARD
    nseg = 0 if is_discard else (nr_sects + SECTORS_PER_PAGE - 1) // SECTORS_PER_PAGE
    max_data = inf.max_indirect_segments if inf.max_indirect_segments > 0 \
        else BLKIF_MAX_SEGMENTS_PER_REQUEST
    is_rw = operation == BLKIF_OP_READ or operation == BLKIF_OP_WRITE
    if nr_sects < 0 or nseg > max_data or (nseg == 0 and is_rw):
        return BLKIF_QUEUE_INVALID
    sh = shadow[r]
    id = blkif_ring_get_request(ri, sh, tag)
    s = sh[id]
    s.nr_sects = nr_sects
    s.buf_pfn = buf_pfn
    if is_discard:
        blkif_queue_discard_req(s, sector, nr_sects)
    else:
        blkif_queue_rw_req(inf, ri, s, grants[r], gnt, mem, operation, sector, nr_sects, nseg,
                           buf_pfn)
    sring = mem[ri.sring:ri.sring + ri.sring_bytes]
    copy_bytes(sring, RING_GET_REQUEST(ri, np.int64(ri.req_prod_pvt)), s.req, 0,
               BLKIF_RING_ENTRY_SIZE)
    ri.req_prod_pvt = (np.int64(ri.req_prod_pvt) + 1) & MASK32
    ri.inflight += 1
    ri.stats[FS_REQUESTS] += 1
    return id


@kernel(forceinline=True)
def flush_requests(rinfo, mem, ev, r):
    """blkfront ``flush_requests``: push ring ``r``'s requests; notify if asked. Returns notify."""
    ri = rinfo[r]
    ri.stats[FS_FLUSHES] += 1
    if RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(mem[ri.sring:ri.sring + ri.sring_bytes], ri):
        notify_remote_via_evtchn(ev, ri.evtchn)
        ri.stats[FS_NOTIFY] += 1
        return True
    return False


# --- completion --------------------------------------------------------------------------------


@kernel(forceinline=True)
def blkif_completion(inf, ri, s, grants, gnt, mem, status):
    """blkfront ``blkif_completion``: copy read data out, release grants; False on an error."""
    nseg = np.int64(s.num_grants)
    copy = inf.touch_data and inf.feature_persistent and s.indirect_op == BLKIF_OP_READ \
        and status == 0
    left = np.int64(s.nr_sects)
    ok = True
    for i in range(nseg):
        g = s.grants_used[i]
        n = left if left < SECTORS_PER_PAGE else SECTORS_PER_PAGE
        left -= n
        if copy:
            copy_bytes(mem, (s.buf_pfn + i) << XEN_PAGE_SHIFT, mem,
                       grants[g].pfn << XEN_PAGE_SHIFT, n * 512)
        ok &= put_grant(inf, ri, grants, gnt, g)
    for k in range(s.num_indirect):
        ok &= put_grant(inf, ri, grants, gnt, s.grants_used[nseg + k])
    return ok


@kernel
def _blkif_set_error(inf):
    inf.connected = BLKIF_STATE_ERROR
    return -1


@kernel(forceinline=True)
def blkif_interrupt(info, rinfo, shadow, grants, gnt, mem, r, done):
    """blkfront ``blkif_interrupt``: consume ring ``r``'s responses and complete them.

    Parameters
    ----------
    info, rinfo, shadow, grants, gnt, mem : as for :func:`blkif_queue_request`
    r : int
    done : DONE_DTYPE[:]
        Filled with the cookie (``tag``) and the ``BLKIF_RSP_*`` status of each completed
        request; at least ``nr_ents`` long (no more than ``nr_ents`` are ever outstanding).

    Returns
    -------
    int
        Requests completed, or -1 when the backend broke the protocol (a response with an id
        not waiting, an operation that does not match, or a producer index running more than
        ``RING_SIZE`` ahead). The device then enters ``BLKIF_STATE_ERROR``, as current blkfront
        does, and accepts no more requests.
    """
    inf = info[0]
    if inf.connected != BLKIF_STATE_CONNECTED:
        return 0
    ri = rinfo[r]
    sh = shadow[r]
    gr = grants[r]
    sring = mem[ri.sring:ri.sring + ri.sring_bytes]
    nr_ents = inf.nr_ents
    buf = ri.rsp_copy
    n = 0
    while True:
        rp = sring_get(sring, RSP_PROD)  # READ_ONCE + virt_rmb
        if RING_RESPONSE_PROD_OVERFLOW(ri, rp):
            return _blkif_set_error(inf)
        i = np.int64(ri.rsp_cons)
        while i != rp:
            RING_COPY_RESPONSE(sring, ri, i, buf)
            id = np.int64(get_u64(buf, RSP_OFF_ID))
            op = get_u8(buf, RSP_OFF_OPERATION)
            status = get_i16(buf, RSP_OFF_STATUS)
            if id < 0 or id >= nr_ents or n >= done.size:
                return _blkif_set_error(inf)
            s = sh[id]
            op_ok = op == s.operation or op == s.indirect_op
            if s.status != REQ_WAITING or s.request < 0 or not op_ok:
                return _blkif_set_error(inf)
            s.status = REQ_PROCESSING
            if not blkif_completion(inf, ri, s, gr, gnt, mem, status):
                return _blkif_set_error(inf)
            done[n].tag = s.request
            done[n].status = status
            n += 1
            if status != 0:
                ri.stats[FS_ERRORS] += 1
            add_id_to_freelist(ri, sh, id)
            ri.inflight -= 1
            i = (i + 1) & MASK32
        ri.rsp_cons = i
        if i != np.int64(ri.req_prod_pvt):
            if RING_FINAL_CHECK_FOR_RESPONSES(sring, ri):
                continue
        else:
            sring_set(sring, RSP_EVENT, i + 1)
        break
    ri.stats[FS_RESPONSES] += n
    ri.stats[FS_INTERRUPTS if n > 0 else FS_SPURIOUS] += 1
    return n


# --- sizing and the device, from Python ------------------------------------------------------


def blkfront_grant_pool(max_indirect: int, nr_ents: int) -> tuple[int, int]:
    """``(grants one request may need, grant entries per ring)`` of blkfront's pool
    (``blkfront_setup_indirect``): ``(segments + ceil(segments / 512)) x RING_SIZE``, where
    segments is the indirect maximum, or 11 without indirect requests."""
    data = max_indirect if max_indirect > BLKIF_MAX_SEGMENTS_PER_REQUEST \
        else BLKIF_MAX_SEGMENTS_PER_REQUEST
    max_grefs = data + -(-data // SEGS_PER_INDIRECT_FRAME)
    return max_grefs, max_grefs * nr_ents


def blkfront_pages(nr_rings: int, order: int, max_indirect: int) -> int:
    """Guest pages a device of ``nr_rings`` rings of ``2**order`` pages needs: the rings and,
    per ring, one page for every entry of its grant pool."""
    return nr_rings * ((1 << order) + blkfront_grant_pool(max_indirect, ring_size(order))[1])


class blkfront_device:
    """One connected blkfront device: its record arrays, the guest's grant table and memory
    and the event channels, with checked Python wrappers around the kernels.

    Attributes
    ----------
    info, rinfo, shadow, grants : the device's records (see the module docstring)
    gnt, mem, evtchn : the guest's grant table and memory, the event-channel table
    """

    def __init__(self, info, rinfo, shadow, grants, gnt, mem, evtchn):
        self.info, self.rinfo, self.shadow, self.grants = info, rinfo, shadow, grants
        self.gnt, self.mem, self.evtchn = gnt, mem, evtchn

    @property
    def nr_rings(self) -> int:
        return int(self.info[0]["nr_rings"])

    def args(self) -> tuple:
        """The arrays of the submit and completion kernels, in order:
        ``blkif_queue_request(*fe.args(), r, ...)``."""
        return self.info, self.rinfo, self.shadow, self.grants, self.gnt, self.mem

    def arrays(self) -> Blkfront:
        """The device's arrays by name (:data:`Blkfront`), as the engines' kernels take them."""
        return Blkfront(self.info, self.rinfo, self.shadow, self.grants, self.gnt, self.mem,
                        self.evtchn)

    @property
    def max_sectors(self) -> int:
        """Largest request in 512-byte sectors (``max_hw_sectors``): segments x 8."""
        segs = int(self.info[0]["max_indirect_segments"]) or BLKIF_MAX_SEGMENTS_PER_REQUEST
        return segs * SECTORS_PER_PAGE

    @property
    def connected(self) -> int:
        return int(self.info[0]["connected"])

    def _ring(self, r: int) -> int:
        if not 0 <= r < self.nr_rings:
            raise XbqError(f"ring {r} out of range (device has {self.nr_rings})")
        return int(r)

    def queue_request(self, r, operation, sector, nr_sects, buf_pfn, tag) -> int:
        """:func:`blkif_queue_request` on ring ``r``; the request id or a ``BLKIF_QUEUE_*``."""
        return int(blkif_queue_request(self.info, self.rinfo, self.shadow, self.grants,
                                       self.gnt, self.mem, self._ring(r), operation, sector,
                                       nr_sects, buf_pfn, tag))

    def flush_requests(self, r) -> bool:
        """:func:`flush_requests` on ring ``r``; True if the backend was notified."""
        return bool(flush_requests(self.rinfo, self.mem, self.evtchn, self._ring(r)))

    def interrupt(self, r):
        """:func:`blkif_interrupt` on ring ``r``; ``(n, tags, statuses)``, n = -1 on a
        protocol error."""
        done = np.zeros(int(self.info[0]["nr_ents"]), DONE_DTYPE)
        n = int(blkif_interrupt(self.info, self.rinfo, self.shadow, self.grants, self.gnt,
                                self.mem, self._ring(r), done))
        return n, done["tag"][:max(n, 0)], done["status"][:max(n, 0)]

    def sring(self, r: int) -> np.ndarray:
        """Ring ``r``'s shared page, a view of guest memory."""
        ri = self.rinfo[self._ring(r)]
        return self.mem[int(ri["sring"]):int(ri["sring"]) + int(ri["sring_bytes"])]

    def stats(self) -> dict[str, int]:
        """The counters summed over rings, by name."""
        return dict(zip(BLKFRONT_STATS, (int(v) for v in self.rinfo["stats"].sum(axis=0)),
                        strict=True))


def new_blkfront(conn, *, touch_data: bool = True, handle: int = 51712) -> blkfront_device:
    """Build blkfront's per-ring state on a connected handshake (``blkfront_connect``).

    Parameters
    ----------
    conn : xbq.blkif.negotiate.Connection
        A connected handshake (``conn.connected``).
    touch_data : bool
        Copy data between the guest's buffers and the persistent grant pages, as blkfront
        does. Engines that move no data (the null device in virtual time) turn it off.
    handle : int
        The virtual device (``virtual-device``), echoed in every request's ``handle``.

    Returns
    -------
    blkfront_device
        The shadow free lists initialised as ``shadow[j].req.u.rw.id = j + 1``, the last
        ``0x0fffffff``; each ring's grant pool of ``(grants + indirect pages) x RING_SIZE``
        entries, each with a reference claimed from the guest's grant table and its own page.
    """
    if not conn.connected:
        raise XbqError(f"the device is not connected ({conn.error or 'handshake incomplete'})")
    nr_rings, nr_ents = conn.nr_rings, conn.nr_ents
    max_indirect = int(conn.features.get("max_indirect_segments", 0))
    persistent = bool(conn.features.get("feature_persistent", False))
    max_grefs, pool = blkfront_grant_pool(max_indirect, nr_ents)
    front = conn.front
    first_page = front.alloc_pages(pool * nr_rings)
    info = np.zeros(1, BLKFRONT_INFO_DTYPE)
    info[0] = (BLKIF_STATE_CONNECTED, nr_rings, nr_ents, int(persistent), max_indirect,
               max_grefs, pool, conn.back.domid, handle & 0xFFFF, conn.sectors,
               int(touch_data))
    rinfo = np.zeros(nr_rings, BLKFRONT_RING_INFO_DTYPE)
    rinfo["nr_ents"] = nr_ents
    rinfo["evtchn"] = [ring.front_slot for ring in conn.rings]
    rinfo["sring"] = [ring.first_frame << XEN_PAGE_SHIFT for ring in conn.rings]
    rinfo["sring_bytes"] = [ring.sring.size for ring in conn.rings]
    rinfo["gnt_head"] = 0
    rinfo["gnt_tail"] = pool - 1
    rinfo["gnt_count"] = pool
    shadow = np.zeros((nr_rings, nr_ents), BLK_SHADOW_DTYPE)
    ids = shadow["req"].view("<u8")  # the id free list lives in each image's id field
    ids[:, :, REQ_OFF_ID // 8] = np.arange(1, nr_ents + 1)
    ids[:, -1, REQ_OFF_ID // 8] = SHADOW_FREELIST_END
    shadow["request"] = -1
    shadow["buf_pfn"] = -1
    shadow["grants_used"] = -1
    grants = np.zeros((nr_rings, pool), GRANT_DTYPE)
    grants["gref"] = front.gnttab_alloc_grant_references(pool * nr_rings).reshape(nr_rings,
                                                                                  pool)
    grants["pfn"] = (first_page + np.arange(pool * nr_rings)).reshape(nr_rings, pool)
    grants["next"] = np.arange(1, pool + 1)
    grants["next"][:, -1] = -1
    return blkfront_device(info, rinfo, shadow, grants, front.shared, front.mem, conn.evtchn)
