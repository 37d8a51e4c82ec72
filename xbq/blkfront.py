"""blkfront: the guest's side of the blkif protocol (Linux ``drivers/block/xen-blkfront.c``).

One :class:`blkfront_info` holds the device and every ring's state in NumPy arrays with a
leading ``nr_rings`` axis (``blkfront_ring_info`` in the kernel): the shared rings, the front
rings' private indices, the shadow array with its id free list, the grant pool and counters.
The jitted functions are what the engines call, from threads or from the event loop:

* :func:`blkif_queue_request` builds one request (grants, segments, indirect descriptors when
  a request has more than 11 segments) in the shadow copy and copies it into the ring slot;
* :func:`flush_requests` publishes it and notifies the backend if ``req_event`` asks for it;
* :func:`blkif_interrupt` consumes responses, accepting one only if its id is waiting and its
  operation matches, completes them (read data copied out of persistent grants, grants kept
  or ended) and recycles ids.

Locking is the caller's: the legacy driver holds one ``io_lock`` around both paths, blk-mq's
per-ring driver holds that ring's ``ring_lock``. Nothing here allocates or touches Python
objects, so it runs in ``nogil`` threads.

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
from xbq.abi import (
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
)
from xbq.errors import XbqError
from xbq.evtchn import notify_remote_via_evtchn
from xbq.grant import (
    GTF_permit_access,
    gnttab_alloc_grant_references,
    gnttab_end_foreign_access_ref,
    gnttab_grant_foreign_access_ref,
    gnttab_query_foreign_access,
)
from xbq.ring import (
    FRONT_RING_DTYPE,
    RING_COPY_RESPONSE,
    RING_FINAL_CHECK_FOR_RESPONSES,
    RING_FULL,
    RING_GET_REQUEST,
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY,
    RING_RESPONSE_PROD_OVERFLOW,
    RSP_EVENT,
    RSP_PROD,
    blkif_front_ring,
    copy_bytes,
    get_i16,
    get_u8,
    get_u64,
    put_u8,
    put_u16,
    put_u32,
    put_u64,
    sring_get,
    sring_set,
)

# --- shadow (struct blk_shadow) -------------------------------------------------------------
# enum blk_req_status
REQ_PROCESSING = 0
REQ_WAITING = 1
REQ_DONE = 2
REQ_ERROR = 3
REQ_EOPNOTSUPP = 4

#: End marker of the id free list (``shadow[last].req.u.rw.id``).
SHADOW_FREELIST_END = 0x0FFFFFFF
#: Debug value written into a popped entry's id (``get_id_from_freelist``).
SHADOW_ID_IN_USE = 0x0FFFFFEE

BLK_SHADOW_DTYPE = np.dtype([
    ("request", "<i8"),  # the caller's cookie for the I/O (-1: no request attached)
    ("status", "i1"),  # enum blk_req_status
    ("operation", "u1"),  # BLKIF_OP_* sent on the ring
    ("indirect_op", "u1"),  # READ/WRITE inside BLKIF_OP_INDIRECT
    ("num_grants", "<i2"),  # data grants used (one per segment)
    ("num_indirect", "<i2"),  # indirect descriptor pages used
    ("nr_sects", "<i4"),  # 512-byte sectors moved
    ("buf_pfn", "<i8"),  # first guest page of the I/O buffer (-1: none)
])

# --- device state (info->connected) ----------------------------------------------------------
BLKIF_STATE_DISCONNECTED = 0
BLKIF_STATE_CONNECTED = 1
BLKIF_STATE_SUSPENDED = 2
BLKIF_STATE_ERROR = 3

# blkif_queue_request return codes (>= 0 is the request id)
BLKIF_QUEUE_BUSY = -1  # RING_FULL: blk-mq stops the hardware queue
BLKIF_QUEUE_INVALID = -2  # more segments than the device's limits allow (a caller bug)
BLKIF_QUEUE_DISCONNECTED = -3

# params (int64 vector, constant after connect)
P_NR_RINGS, P_NR_ENTS, P_PERSISTENT, P_MAX_INDIRECT, P_MAX_GREFS, P_POOL, P_BACKEND_DOMID, \
    P_HANDLE, P_SECTORS, P_TOUCH_DATA, P_CONNECTED = range(11)
N_PARAMS = 11

# per-ring mutable state (int64[nr_rings, N_RSTATE])
RS_SHADOW_FREE, RS_GNT_HEAD, RS_GNT_COUNT, RS_PERSISTENT_GNTS_C, RS_INFLIGHT = range(5)
N_RSTATE = 5

#: Per-ring counters, int64[nr_rings, len(BLKFRONT_STATS)].
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

blkfront_info = namedtuple("blkfront_info", [
    "srings", "front_pvt", "shadow", "shadow_req", "shadow_grants", "gnt_gref", "gnt_pfn",
    "gnt_list", "ring_state", "evtchn_port", "rsp_copy", "params", "stats", "gnttab", "pages",
    "evtchn",
])
blkfront_info.__doc__ = """A blkfront device and its rings (arrays with a leading ring axis).

srings : uint8[nr_rings, 4096 << order]       the shared rings (views of guest pages)
front_pvt : FRONT_RING_DTYPE[nr_rings]         req_prod_pvt, rsp_cons, nr_ents
shadow : BLK_SHADOW_DTYPE[nr_rings, nr_ents]   per-id bookkeeping
shadow_req : uint8[nr_rings, nr_ents, 112]     each id's request image (REQUEST_DTYPE bytes);
                                               free entries link the id free list
shadow_grants : int32[nr_rings, nr_ents, max_grefs]  pool entries used (data, then indirect)
gnt_gref, gnt_pfn : int32/int64[nr_rings, pool]      each pool entry's reference and own page
gnt_list : int32[nr_rings, pool]               the free pool entries, a deque (head = most
                                               recently kept persistent grant)
ring_state : int64[nr_rings, N_RSTATE]         shadow_free, deque head/count, persistent_gnts_c,
                                               requests in flight
evtchn_port : int32[nr_rings]                  each ring's event channel (frontend side)
rsp_copy : uint8[nr_rings, 16]                 RING_COPY_RESPONSE target
params : int64[N_PARAMS]                       see P_*; P_CONNECTED is info->connected
stats : int64[nr_rings, len(BLKFRONT_STATS)]
gnttab, pages : the guest's grant table and memory; evtchn : the event-channel table
"""


# --- small helpers ---------------------------------------------------------------------------


def front_ring(fi, r):
    """Return ring ``r`` as a ``blkif_front_ring`` (usable in Python and in kernels)."""
    return blkif_front_ring(fi.srings[r], fi.front_pvt[r:r + 1])


_front_ring = kernel(inline="always")(front_ring)


@kernel(inline="always")
def get_id_from_freelist(fi, r):
    """blkfront ``get_id_from_freelist``: pop a free shadow id (the caller checked RING_FULL)."""
    rs = fi.ring_state[r]
    free = rs[RS_SHADOW_FREE]
    rs[RS_SHADOW_FREE] = np.int64(get_u64(fi.shadow_req[r, free], REQ_OFF_ID))
    put_u64(fi.shadow_req[r, free], REQ_OFF_ID, SHADOW_ID_IN_USE)
    return free


@kernel(inline="always")
def add_id_to_freelist(fi, r, id):
    """blkfront ``add_id_to_freelist``: push ``id`` back; False if it was not in use."""
    s = fi.shadow[r, id]
    if np.int64(get_u64(fi.shadow_req[r, id], REQ_OFF_ID)) != id or s.request < 0:
        return False
    rs = fi.ring_state[r]
    put_u64(fi.shadow_req[r, id], REQ_OFF_ID, rs[RS_SHADOW_FREE])
    s.request = -1
    rs[RS_SHADOW_FREE] = id
    return True


@kernel(inline="always")
def _get_grant(fi, r, data_pfn):
    """blkfront ``get_grant``: take a pool entry and make sure the backend may map its page.

    With persistent grants the entry's own page is granted once and kept; without, the
    guest's page ``data_pfn`` is granted for this request (or the entry's own page for an
    indirect descriptor, ``data_pfn < 0``). Returns the pool index.
    """
    rs = fi.ring_state[r]
    pool = fi.gnt_list.shape[1]
    g = np.int64(fi.gnt_list[r, rs[RS_GNT_HEAD]])
    rs[RS_GNT_HEAD] = (rs[RS_GNT_HEAD] + 1) % pool
    rs[RS_GNT_COUNT] -= 1
    ref = fi.gnt_gref[r, g]
    if fi.params[P_PERSISTENT] and fi.gnttab.shared[ref].flags & GTF_permit_access:
        # still granted: a persistent grant kept at the head of the list
        rs[RS_PERSISTENT_GNTS_C] -= 1
        fi.stats[r, FS_GRANTS_REUSED] += 1
        return g
    frame = fi.gnt_pfn[r, g] if fi.params[P_PERSISTENT] or data_pfn < 0 else data_pfn
    gnttab_grant_foreign_access_ref(fi.gnttab, ref, fi.params[P_BACKEND_DOMID], frame, False)
    fi.stats[r, FS_GRANTS_NEW] += 1
    return g


@kernel(inline="always")
def _put_grant(fi, r, g):
    """Return pool entry ``g`` after completion, as ``blkif_completion`` does.

    A grant the backend still maps is kept at the head of the list and counted persistent;
    any other is ended and queued at the tail. Returns False if a grant is still mapped by a
    backend that did not negotiate persistence (a protocol error).
    """
    rs = fi.ring_state[r]
    pool = fi.gnt_list.shape[1]
    ref = fi.gnt_gref[r, g]
    if fi.params[P_PERSISTENT]:
        if gnttab_query_foreign_access(fi.gnttab, ref):
            rs[RS_GNT_HEAD] = (rs[RS_GNT_HEAD] - 1) % pool
            fi.gnt_list[r, rs[RS_GNT_HEAD]] = g
            rs[RS_GNT_COUNT] += 1
            rs[RS_PERSISTENT_GNTS_C] += 1
            return True
    if not gnttab_end_foreign_access_ref(fi.gnttab, ref):
        return False
    fi.stats[r, FS_GRANTS_ENDED] += 1
    fi.gnt_list[r, (rs[RS_GNT_HEAD] + rs[RS_GNT_COUNT]) % pool] = g
    rs[RS_GNT_COUNT] += 1
    return True


# --- submission --------------------------------------------------------------------------------


@kernel
def blkif_queue_request(fi, r, operation, sector, nr_sects, buf_pfn, tag):
    """blkfront ``blkif_queue_request``: put one I/O on ring ``r``; return its id.

    Parameters
    ----------
    fi : blkfront_info
    r : int
        Ring (hardware queue) index.
    operation : int
        ``BLKIF_OP_READ``, ``_WRITE``, ``_FLUSH_DISKCACHE``, ``_WRITE_BARRIER`` or ``_DISCARD``.
    sector : int
        First 512-byte sector on the virtual disk.
    nr_sects : int
        Length in 512-byte sectors (0 for a pure flush); at most ``max_sectors(fi)``.
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
    Changes the ring's shadow, grant pool, ``req_prod_pvt`` and the slot bytes; with
    persistent grants and ``P_TOUCH_DATA`` it copies write data into the granted pages.
    The request is not visible to the backend until :func:`flush_requests`.
    """
    if fi.params[P_CONNECTED] != BLKIF_STATE_CONNECTED:
        return BLKIF_QUEUE_DISCONNECTED
    fr = _front_ring(fi, r)
    if RING_FULL(fr):
        fi.stats[r, FS_RING_FULL] += 1
        return BLKIF_QUEUE_BUSY
    is_discard = operation == BLKIF_OP_DISCARD
    nseg = 0 if is_discard else (nr_sects + SECTORS_PER_PAGE - 1) // SECTORS_PER_PAGE
    max_data = fi.params[P_MAX_INDIRECT] if fi.params[P_MAX_INDIRECT] > 0 \
        else BLKIF_MAX_SEGMENTS_PER_REQUEST
    is_rw = operation == BLKIF_OP_READ or operation == BLKIF_OP_WRITE
    if nr_sects < 0 or nseg > max_data or (nseg == 0 and is_rw):
        return BLKIF_QUEUE_INVALID
    id = get_id_from_freelist(fi, r)
    img = fi.shadow_req[r, id]
    for k in range(0, BLKIF_RING_ENTRY_SIZE, 8):
        put_u64(img, k, 0)
    s = fi.shadow[r, id]
    s.request = tag
    s.status = REQ_WAITING
    s.nr_sects = nr_sects
    s.buf_pfn = buf_pfn
    s.num_grants = 0
    s.num_indirect = 0
    put_u64(img, REQ_OFF_ID, id)
    put_u64(img, REQ_OFF_SECTOR_NUMBER, sector)
    if is_discard:
        put_u8(img, REQ_OFF_OPERATION, BLKIF_OP_DISCARD)
        put_u64(img, DISC_OFF_NR_SECTORS, nr_sects)
        s.operation = BLKIF_OP_DISCARD
        s.indirect_op = BLKIF_OP_DISCARD
    else:
        indirect = nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST
        s.indirect_op = operation
        s.operation = BLKIF_OP_INDIRECT if indirect else operation
        put_u8(img, REQ_OFF_OPERATION, s.operation)
        touch = fi.params[P_TOUCH_DATA] and fi.params[P_PERSISTENT]
        if indirect:
            put_u8(img, IND_OFF_INDIRECT_OP, operation)
            put_u16(img, IND_OFF_NR_SEGMENTS, nseg)
            put_u16(img, IND_OFF_HANDLE, fi.params[P_HANDLE])
            n_ind = (nseg + SEGS_PER_INDIRECT_FRAME - 1) // SEGS_PER_INDIRECT_FRAME
            for k in range(n_ind):
                g = _get_grant(fi, r, -1)
                fi.shadow_grants[r, id, nseg + k] = g
                put_u32(img, IND_OFF_INDIRECT_GREFS + 4 * k, fi.gnt_gref[r, g])
            s.num_indirect = n_ind
            fi.stats[r, FS_INDIRECT] += 1
        else:
            put_u8(img, REQ_OFF_NR_SEGMENTS, nseg)
            put_u16(img, REQ_OFF_HANDLE, fi.params[P_HANDLE])
        left = nr_sects
        for i in range(nseg):
            g = _get_grant(fi, r, buf_pfn + i)
            fi.shadow_grants[r, id, i] = g
            last = (left if left < SECTORS_PER_PAGE else SECTORS_PER_PAGE) - 1
            left -= last + 1
            if touch and operation != BLKIF_OP_READ:
                copy_bytes(fi.pages[fi.gnt_pfn[r, g]], 0, fi.pages[buf_pfn + i], 0,
                           (last + 1) * 512)
            if indirect:  # the segment goes into the descriptor page
                ind = fi.shadow_grants[r, id, nseg + i // SEGS_PER_INDIRECT_FRAME]
                page = fi.pages[fi.gnt_pfn[r, ind]]
                off = (i % SEGS_PER_INDIRECT_FRAME) * SEG_SIZE
            else:
                page = img
                off = REQ_OFF_SEG + i * SEG_SIZE
            put_u32(page, off, fi.gnt_gref[r, g])
            put_u8(page, off + SEG_OFF_FIRST_SECT, 0)
            put_u8(page, off + SEG_OFF_LAST_SECT, last)
        s.num_grants = nseg
        fi.stats[r, FS_SEGMENTS] += nseg
    # The request is built in the shadow; now copy it into the slot (current blkfront).
    p = fr.pvt[0]
    slot = RING_GET_REQUEST(fr, np.int64(p.req_prod_pvt))
    copy_bytes(fr.sring, slot, img, 0, BLKIF_RING_ENTRY_SIZE)
    p.req_prod_pvt = (np.int64(p.req_prod_pvt) + 1) & 0xFFFFFFFF
    fi.ring_state[r, RS_INFLIGHT] += 1
    fi.stats[r, FS_REQUESTS] += 1
    return id


@kernel
def flush_requests(fi, r):
    """blkfront ``flush_requests``: push ring ``r``'s requests; notify if asked. Returns notify."""
    fi.stats[r, FS_FLUSHES] += 1
    if RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(_front_ring(fi, r)):
        notify_remote_via_evtchn(fi.evtchn, fi.evtchn_port[r])
        fi.stats[r, FS_NOTIFY] += 1
        return True
    return False


# --- completion --------------------------------------------------------------------------------


@kernel(inline="always")
def _blkif_completion(fi, r, id, status):
    """blkfront ``blkif_completion``: copy read data out, release grants; False on an error."""
    s = fi.shadow[r, id]
    nseg = np.int64(s.num_grants)
    copy = fi.params[P_TOUCH_DATA] and fi.params[P_PERSISTENT] and s.indirect_op == BLKIF_OP_READ \
        and status == 0
    left = np.int64(s.nr_sects)
    ok = True
    for i in range(nseg):
        g = fi.shadow_grants[r, id, i]
        n = left if left < SECTORS_PER_PAGE else SECTORS_PER_PAGE
        left -= n
        if copy:
            copy_bytes(fi.pages[s.buf_pfn + i], 0, fi.pages[fi.gnt_pfn[r, g]], 0, n * 512)
        ok &= _put_grant(fi, r, g)
    for k in range(s.num_indirect):
        ok &= _put_grant(fi, r, fi.shadow_grants[r, id, nseg + k])
    return ok


@kernel(inline="always")
def _blkif_set_error(fi):
    fi.params[P_CONNECTED] = BLKIF_STATE_ERROR
    return -1


@kernel
def blkif_interrupt(fi, r, done_tag, done_status):
    """blkfront ``blkif_interrupt``: consume ring ``r``'s responses and complete them.

    Parameters
    ----------
    fi : blkfront_info
    r : int
    done_tag, done_status : int64[:]
        Filled with the cookie and the ``BLKIF_RSP_*`` status of each completed request;
        at least ``nr_ents`` long (no more than ``nr_ents`` requests are ever outstanding).

    Returns
    -------
    int
        Requests completed, or -1 when the backend broke the protocol (a response with an id
        not waiting, an operation that does not match, or a producer index running more than
        ``RING_SIZE`` ahead). The device then enters ``BLKIF_STATE_ERROR``, as current blkfront
        does, and accepts no more requests.
    """
    if fi.params[P_CONNECTED] != BLKIF_STATE_CONNECTED:
        return 0
    fr = _front_ring(fi, r)
    p = fr.pvt[0]
    nr_ents = fi.params[P_NR_ENTS]
    buf = fi.rsp_copy[r]
    n = 0
    while True:
        rp = sring_get(fr.sring, RSP_PROD)  # READ_ONCE + virt_rmb
        if RING_RESPONSE_PROD_OVERFLOW(fr, rp):
            return _blkif_set_error(fi)
        i = np.int64(p.rsp_cons)
        while i != rp:
            RING_COPY_RESPONSE(fr, i, buf)
            id = np.int64(get_u64(buf, RSP_OFF_ID))
            op = get_u8(buf, RSP_OFF_OPERATION)
            status = get_i16(buf, RSP_OFF_STATUS)
            if id < 0 or id >= nr_ents or n >= done_tag.size:
                return _blkif_set_error(fi)
            s = fi.shadow[r, id]
            op_ok = op == s.operation or op == s.indirect_op
            if s.status != REQ_WAITING or s.request < 0 or not op_ok:
                return _blkif_set_error(fi)
            s.status = REQ_PROCESSING
            if not _blkif_completion(fi, r, id, status):
                return _blkif_set_error(fi)
            done_tag[n] = s.request
            done_status[n] = status
            n += 1
            if status != 0:
                fi.stats[r, FS_ERRORS] += 1
            add_id_to_freelist(fi, r, id)
            fi.ring_state[r, RS_INFLIGHT] -= 1
            i = (i + 1) & 0xFFFFFFFF
        p.rsp_cons = i
        if i != np.int64(p.req_prod_pvt):
            if RING_FINAL_CHECK_FOR_RESPONSES(fr):
                continue
        else:
            sring_set(fr.sring, RSP_EVENT, i + 1)
        break
    fi.stats[r, FS_RESPONSES] += n
    fi.stats[r, FS_INTERRUPTS if n > 0 else FS_SPURIOUS] += 1
    return n


# --- construction (Python, at connect time) -----------------------------------------------------


def max_sectors(fi: blkfront_info) -> int:
    """Largest request in 512-byte sectors (``max_hw_sectors``): segments x 8."""
    segs = int(fi.params[P_MAX_INDIRECT]) or BLKIF_MAX_SEGMENTS_PER_REQUEST
    return segs * SECTORS_PER_PAGE


def _stack_ring_pages(conn) -> np.ndarray:
    """The rings' shared pages as one ``(nr_rings, bytes)`` view of guest memory."""
    npages = 1 << conn.ring_page_order
    first = conn.rings[0].first_frame
    for k, ring in enumerate(conn.rings):
        if ring.first_frame != first + k * npages:
            raise XbqError("ring pages are not contiguous in guest memory; cannot build a view")
    return conn.front.pages[first:first + conn.nr_rings * npages].reshape(conn.nr_rings, -1)


def new_blkfront(conn, *, touch_data: bool = True, handle: int = 51712) -> blkfront_info:
    """Build blkfront's per-ring state on a connected handshake (``blkfront_connect``).

    Parameters
    ----------
    conn : xbq.xenbus.Connection
        A connected handshake (``conn.connected``).
    touch_data : bool
        Copy data between the guest's buffers and the persistent grant pages, as blkfront
        does. Engines that move no data (the null device in virtual time) turn it off.
    handle : int
        The virtual device (``virtual-device``), echoed in every request's ``handle``.

    Returns
    -------
    blkfront_info
        The shadow free lists initialised as ``shadow[j].req.u.rw.id = j + 1``, the last
        ``0x0fffffff``; each ring's grant pool of ``(grants + indirect pages) x RING_SIZE``
        entries, each with a reference claimed from the guest's grant table and its own page.
    """
    if not conn.connected:
        raise XbqError(f"the device is not connected ({conn.error or 'handshake incomplete'})")
    nr_rings, nr_ents = conn.nr_rings, conn.nr_ents
    max_indirect = int(conn.features.get("max_indirect_segments", 0))
    persistent = bool(conn.features.get("feature_persistent", False))
    data_grefs = max_indirect if max_indirect > 0 else BLKIF_MAX_SEGMENTS_PER_REQUEST
    max_grefs = data_grefs + -(-data_grefs // SEGS_PER_INDIRECT_FRAME)
    pool = max_grefs * nr_ents
    front = conn.front
    first_page = front.alloc_pages(pool * nr_rings)
    gnt_pfn = (first_page + np.arange(pool * nr_rings, dtype=np.int64)).reshape(nr_rings, pool)
    gnt_gref = gnttab_alloc_grant_references(front.gnttab, pool * nr_rings).reshape(nr_rings, pool)
    shadow_req = np.zeros((nr_rings, nr_ents, BLKIF_RING_ENTRY_SIZE), np.uint8)
    words = shadow_req.view("<u8")  # the id free list lives in each image's id field
    words[:, :, REQ_OFF_ID // 8] = np.arange(1, nr_ents + 1)
    words[:, -1, REQ_OFF_ID // 8] = SHADOW_FREELIST_END
    shadow = np.zeros((nr_rings, nr_ents), BLK_SHADOW_DTYPE)
    shadow["request"] = -1
    shadow["buf_pfn"] = -1
    ring_state = np.zeros((nr_rings, N_RSTATE), np.int64)
    ring_state[:, RS_GNT_COUNT] = pool
    front_pvt = np.zeros(nr_rings, FRONT_RING_DTYPE)
    front_pvt["nr_ents"] = nr_ents
    srings = _stack_ring_pages(conn)
    params = np.zeros(N_PARAMS, np.int64)
    params[[P_NR_RINGS, P_NR_ENTS, P_PERSISTENT, P_MAX_INDIRECT, P_MAX_GREFS, P_POOL,
            P_BACKEND_DOMID, P_HANDLE, P_SECTORS, P_TOUCH_DATA, P_CONNECTED]] = [
        nr_rings, nr_ents, int(persistent), max_indirect, max_grefs, pool, conn.back.domid,
        handle & 0xFFFF, conn.sectors, int(touch_data), BLKIF_STATE_CONNECTED]
    return blkfront_info(
        srings=srings, front_pvt=front_pvt, shadow=shadow, shadow_req=shadow_req,
        shadow_grants=np.full((nr_rings, nr_ents, max_grefs), -1, np.int32),
        gnt_gref=gnt_gref, gnt_pfn=gnt_pfn,
        gnt_list=np.tile(np.arange(pool, dtype=np.int32), (nr_rings, 1)),
        ring_state=ring_state,
        evtchn_port=np.array([ring.front_port for ring in conn.rings], np.int32),
        rsp_copy=np.zeros((nr_rings, 16), np.uint8), params=params,
        stats=np.zeros((nr_rings, len(BLKFRONT_STATS)), np.int64),
        gnttab=front.gnttab, pages=front.pages, evtchn=conn.evtchn)


def blkfront_stats(fi: blkfront_info) -> dict[str, int]:
    """Return the counters summed over rings, by name."""
    return dict(zip(BLKFRONT_STATS, (int(v) for v in fi.stats.sum(axis=0)), strict=True))

