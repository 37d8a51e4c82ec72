"""Grant tables, guest memory and grant mappings (Xen ``grant_table.h``, Linux ``grant-table.c``).

A domain owns real memory, ``pages`` (``nr_pages x 4096`` bytes), and a v1 grant table,
``shared`` (:data:`xbq.abi.GRANT_ENTRY_V1_DTYPE`: ``flags``, ``domid``, ``frame``). The guest
grants a peer access to one of its pages by writing an entry; the peer maps the grant
reference with a hypercall that checks the entry exactly as Xen's ``_set_status_v1`` does and
records the mapping in the mapper's *maptrack*, returning a handle. While mapped, Xen keeps
``GTF_reading``/``GTF_writing`` set in the shared entry, which is how the granting guest learns
that ending access would fail (``gnttab_end_foreign_access_ref``).

Hot-path functions are ``@njit`` kernels over namedtuples of arrays:

* :class:`gnttab` (the granting side's table: shared entries, pin counts, free list, counters);
* :class:`xen_maptrack` (the mapping side's handles; one per backend ring, so ring threads
  never share one).

Counters (:data:`GNTTAB_STATS`) are updated atomically, so several ring threads may map and
unmap the same domain's grants at once.

Errors are Xen's: ``GNTST_bad_gntref`` for a reference beyond the table,
``GNTST_general_error`` for an entry that is not a live grant to the mapping domain or for a
writable map of a read-only grant, ``GNTST_bad_handle`` for unmapping a handle not in use,
``GNTST_no_device_space`` when the maptrack is full, ``GNTST_bad_page`` for an entry whose
frame is not a page of the granting domain, and ``GNTST_permission_denied`` for a write
through a read-only mapping.

The frame is checked once, when Xen maps the grant (``get_paged_frame`` fails for a frame the
granter does not own), and again by every copy through a handle, so a frontend that writes a
grant entry naming a page beyond its memory gets an error status, never a read or write
outside guest memory. Flag updates are Xen's and Linux's atomic ones: the map path swaps
``flags``/``domid`` as one 32-bit word with ``cmpxchg`` (``_set_status_v1``, giving up after
four retries on an entry the guest keeps changing), unmap clears ``GTF_reading`` /
``GTF_writing`` with a locked ``and`` (``gnttab_clear_flag``), and the guest ends access with
a check-then-``cmpxchg`` loop (``gnttab_end_foreign_access_ref_v1``).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from xbq._jit import kernel
from xbq.abi import GRANT_ENTRY_V1_DTYPE, XEN_PAGE_SIZE
from xbq.atomic import atomic_and_u16_at, atomic_fetch_add, cmpxchg_u16_at, cmpxchg_u32_at, smp_wmb
from xbq.errors import XbqError
from xbq.ring import copy_bytes

# --- grant_table.h flags and status codes --------------------------------------------------
GTF_invalid = 0
GTF_permit_access = 1
GTF_accept_transfer = 2
GTF_type_mask = 3
GTF_readonly = 1 << 2
GTF_reading = 1 << 3
GTF_writing = 1 << 4

GNTST_okay = 0
GNTST_general_error = -1
GNTST_bad_domain = -2
GNTST_bad_gntref = -3
GNTST_bad_handle = -4
GNTST_no_device_space = -7
GNTST_permission_denied = -8
GNTST_bad_page = -9

GNTST_NAMES = {
    GNTST_okay: "GNTST_okay", GNTST_general_error: "GNTST_general_error",
    GNTST_bad_domain: "GNTST_bad_domain", GNTST_bad_gntref: "GNTST_bad_gntref",
    GNTST_bad_handle: "GNTST_bad_handle", GNTST_no_device_space: "GNTST_no_device_space",
    GNTST_permission_denied: "GNTST_permission_denied", GNTST_bad_page: "GNTST_bad_page",
}

#: Byte offsets in a grant entry: ``flags`` and ``domid`` form the 32-bit word Xen swaps.
GNT_OFF_FLAGS = GRANT_ENTRY_V1_DTYPE.fields["flags"][1]
GNT_OFF_DOMID = GRANT_ENTRY_V1_DTYPE.fields["domid"][1]
assert (GNT_OFF_FLAGS, GNT_OFF_DOMID) == (0, 2)  # little-endian: flags | domid << 16
#: ``_set_status_v1`` retries: after this many lost races the entry is "unstable".
GNT_SET_STATUS_RETRIES = 4

#: Xen reserves the first entries of every table for the toolstack (console, xenstore).
GNTTAB_NR_RESERVED_ENTRIES = 8
GRANT_INVALID_REF = 0  # blkfront's marker for "no grant"
DOMID_BACKEND = 0  # dom0 runs blkback
DOMID_FRONTEND = 1  # the guest runs blkfront

# Indices into gnttab.stats (int64, updated atomically).
GNT_FREE_COUNT = 0  # references on the free list
GNT_GRANTS = 1  # gnttab_grant_foreign_access_ref calls
GNT_ENDS = 2  # successful gnttab_end_foreign_access_ref calls
GNT_MAP_OPS = 3  # successful map operations (one per reference; the hypercall may batch)
GNT_UNMAP_OPS = 4  # successful unmap operations
GNT_MAP_ERRORS = 5  # map operations that failed
GNTTAB_STATS = ("free_count", "grants", "ends", "map_ops", "unmap_ops", "map_errors")

gnttab = namedtuple("gnttab", ["shared", "pin", "pin_wr", "free", "stats", "nr_frames"])
gnttab.__doc__ = """A domain's v1 grant table.

shared : GRANT_ENTRY_V1_DTYPE[nr_grefs]  entries the guest writes and Xen checks
pin, pin_wr : int32[nr_grefs]            live mappings of each entry (all / writable)
free : int32[nr_grefs]                    free references, a stack of ``stats[GNT_FREE_COUNT]``
stats : int64[len(GNTTAB_STATS)]          counters, see ``GNTTAB_STATS``
nr_frames : int64[1]                      pages the granting domain owns (frames 0 .. n-1)
"""

xen_maptrack = namedtuple("xen_maptrack", ["ref", "frame", "readonly", "free", "nfree"])
xen_maptrack.__doc__ = """The mapping domain's table of grant handles (one per backend ring).

ref, frame : int32[n]    the mapped reference and the granter's page it reaches
readonly : int8[n]       1 for a read-only mapping, -1 for a free handle
free : int32[n]          free handles, a stack of ``nfree[0]``
nfree : int64[1]
"""


def new_gnttab(nr_grefs: int, nr_frames: int) -> gnttab:
    """Return an empty grant table of ``nr_grefs`` entries, the reserved ones held back, for
    a domain of ``nr_frames`` pages (the frames a grant may name)."""
    if nr_grefs <= GNTTAB_NR_RESERVED_ENTRIES:
        raise ValueError(f"a grant table needs more than {GNTTAB_NR_RESERVED_ENTRIES} entries")
    free = np.zeros(nr_grefs, np.int32)
    refs = np.arange(nr_grefs - 1, GNTTAB_NR_RESERVED_ENTRIES - 1, -1, dtype=np.int32)
    free[: refs.size] = refs  # pop from the end: lowest reference first
    stats = np.zeros(len(GNTTAB_STATS), np.int64)
    stats[GNT_FREE_COUNT] = refs.size
    return gnttab(np.zeros(nr_grefs, GRANT_ENTRY_V1_DTYPE), np.zeros(nr_grefs, np.int32),
                  np.zeros(nr_grefs, np.int32), free, stats, np.array([nr_frames], np.int64))


def new_maptrack(nr_handles: int) -> xen_maptrack:
    """Return an empty maptrack of ``nr_handles`` grant handles."""
    return xen_maptrack(np.zeros(nr_handles, np.int32), np.zeros(nr_handles, np.int32),
                        np.full(nr_handles, -1, np.int8),
                        np.arange(nr_handles - 1, -1, -1, dtype=np.int32),
                        np.array([nr_handles], np.int64))


# --- the granting guest (Linux drivers/xen/grant-table.c) ------------------------------------


@kernel(inline="always")
def gnttab_claim_grant_reference(gt):
    """Take a free grant reference; return it, or -1 if none is left. Changes ``gt.free``."""
    n = gt.stats[GNT_FREE_COUNT]
    if n == 0:
        return -1
    gt.stats[GNT_FREE_COUNT] = n - 1
    return np.int64(gt.free[n - 1])


def gnttab_alloc_grant_references(gt: gnttab, count: int) -> np.ndarray:
    """Claim ``count`` free references at once (set-up time); raise if the table is too small."""
    n = int(gt.stats[GNT_FREE_COUNT])
    if count > n:
        raise XbqError(f"grant table exhausted: {count} references needed, {n} free")
    refs = gt.free[n - count:n][::-1].copy()
    gt.stats[GNT_FREE_COUNT] = n - count
    return refs


@kernel(inline="always")
def gnttab_release_grant_reference(gt, ref):
    """Return ``ref`` to the free list. Changes ``gt.free``."""
    n = gt.stats[GNT_FREE_COUNT]
    gt.free[n] = ref
    gt.stats[GNT_FREE_COUNT] = n + 1


@kernel(inline="always")
def gnttab_grant_foreign_access_ref(gt, ref, domid, frame, readonly):
    """Let ``domid`` map the guest page ``frame`` through ``ref`` (read-only if asked).

    The frame and domain are written before the flags, with a write barrier between, as
    Linux's ``gnttab_grant_foreign_access_ref_v1`` does, so Xen never sees a valid entry with
    a stale frame. Changes ``gt.shared[ref]``.
    """
    e = gt.shared[ref]
    e.frame = frame
    e.domid = domid
    smp_wmb()
    e.flags = GTF_permit_access | (GTF_readonly if readonly else 0)
    atomic_fetch_add(gt.stats, GNT_GRANTS, 1)


@kernel(inline="always")
def gnttab_query_foreign_access(gt, ref):
    """True while the peer still has ``ref`` mapped (``GTF_reading``/``GTF_writing`` set)."""
    return (gt.shared[ref].flags & (GTF_reading | GTF_writing)) != 0


@kernel(inline="always")
def gnttab_end_foreign_access_ref(gt, ref):
    """Revoke ``ref``; return False (and change nothing) while the peer still maps it.

    Linux's ``gnttab_end_foreign_access_ref_v1``: read the flags, refuse if ``GTF_reading`` or
    ``GTF_writing`` is set, else ``cmpxchg`` them to 0, and retry if Xen changed them between
    the read and the exchange (a map racing the revocation). The loop is bounded: each retry
    means the hypervisor changed the entry, which it does at most once per map or unmap.
    """
    for _ in range(1 << 16):
        flags = np.int64(gt.shared[ref].flags)
        if flags & (GTF_reading | GTF_writing):
            return False
        if np.int64(cmpxchg_u16_at(gt.shared, ref, GNT_OFF_FLAGS, flags, GTF_invalid)) == flags:
            atomic_fetch_add(gt.stats, GNT_ENDS, 1)
            return True
    return False


# --- the hypervisor, on behalf of the mapping domain -----------------------------------------


@kernel(inline="always")
def gnttab_map_grant_ref(gt, ref, domid, readonly, mt):
    """``GNTTABOP_map_grant_ref``: map ``ref`` of the granter for ``domid``.

    Returns a grant handle (>= 0) in ``mt`` or a negative ``GNTST_*`` status:
    ``GNTST_bad_gntref`` (no such entry), ``GNTST_general_error`` (not a live grant to
    ``domid``, a writable map of a read-only grant, or an entry the guest kept changing under
    the exchange), ``GNTST_bad_page`` (the entry's frame is not a page of the granter),
    ``GNTST_no_device_space`` (maptrack full). Changes ``gt.shared[ref].flags``, ``gt.pin``,
    ``mt``.

    As Xen's ``_set_status_v1``: the entry's ``flags`` and ``domid`` are read as one word,
    checked, and swapped for the same word with ``GTF_reading`` (and ``GTF_writing``) set by
    ``cmpxchg``; a guest that changes the word in between makes the exchange fail, and after
    ``GNT_SET_STATUS_RETRIES`` lost races the map fails. The frame is read after the flags
    are set (it may not change while the entry is in use) and must be one of the granter's
    pages.
    """
    if ref < 0 or ref >= gt.shared.size:
        atomic_fetch_add(gt.stats, GNT_MAP_ERRORS, 1)
        return GNTST_bad_gntref
    n = mt.nfree[0]
    if n == 0:
        atomic_fetch_add(gt.stats, GNT_MAP_ERRORS, 1)
        return GNTST_no_device_space
    pin = GTF_reading if readonly else (GTF_reading | GTF_writing)
    rc = GNTST_general_error
    for _ in range(GNT_SET_STATUS_RETRIES + 1):
        e = gt.shared[ref]
        scombo = np.int64(e.flags) | (np.int64(e.domid) << 16)
        flags = scombo & 0xFFFF
        if (flags & GTF_type_mask) != GTF_permit_access or (scombo >> 16) != domid:
            break
        if not readonly and (flags & GTF_readonly):
            break
        prev = np.int64(cmpxchg_u32_at(gt.shared, ref, GNT_OFF_FLAGS, scombo, scombo | pin))
        if prev == scombo:
            rc = GNTST_okay
            break
    if rc != GNTST_okay:
        atomic_fetch_add(gt.stats, GNT_MAP_ERRORS, 1)
        return rc
    frame = np.int64(gt.shared[ref].frame)
    if frame >= gt.nr_frames[0]:
        _clear_pin_flags(gt, ref, readonly)  # undo what this map set (no mapping was made)
        atomic_fetch_add(gt.stats, GNT_MAP_ERRORS, 1)
        return GNTST_bad_page
    handle = np.int64(mt.free[n - 1])
    mt.nfree[0] = n - 1
    mt.ref[handle] = ref
    mt.frame[handle] = frame
    mt.readonly[handle] = 1 if readonly else 0
    gt.pin[ref] += 1
    if not readonly:
        gt.pin_wr[ref] += 1
    atomic_fetch_add(gt.stats, GNT_MAP_OPS, 1)
    return handle


@kernel(inline="always")
def _clear_pin_flags(gt, ref, readonly):
    """Clear the flags a mapping set, when no other mapping of ``ref`` needs them."""
    if not readonly and gt.pin_wr[ref] == 0:
        atomic_and_u16_at(gt.shared, ref, GNT_OFF_FLAGS, ~GTF_writing & 0xFFFF)
    if gt.pin[ref] == 0:
        atomic_and_u16_at(gt.shared, ref, GNT_OFF_FLAGS, ~GTF_reading & 0xFFFF)


@kernel(inline="always")
def gnttab_unmap_grant_ref(gt, mt, handle):
    """``GNTTABOP_unmap_grant_ref``: drop mapping ``handle``; return a ``GNTST_*`` status.

    Clears ``GTF_writing`` / ``GTF_reading`` in the granter's entry when the last writable /
    last mapping goes. Changes ``gt.shared``, ``gt.pin``, ``mt``.
    """
    if handle < 0 or handle >= mt.ref.size or mt.readonly[handle] < 0:
        return GNTST_bad_handle
    ref = mt.ref[handle]
    readonly = mt.readonly[handle] != 0
    gt.pin[ref] -= 1
    if not readonly:
        gt.pin_wr[ref] -= 1
    _clear_pin_flags(gt, ref, readonly)
    mt.readonly[handle] = -1
    n = mt.nfree[0]
    mt.free[n] = handle
    mt.nfree[0] = n + 1
    atomic_fetch_add(gt.stats, GNT_UNMAP_OPS, 1)
    return GNTST_okay


@kernel(inline="always")
def _mapped_frame(pages, mt, handle, offset, nbytes):
    """The frame behind a live ``handle`` if ``[offset, offset + nbytes)`` lies in its page,
    else a negative ``GNTST_*`` status (a bad handle, or a frame outside ``pages``)."""
    if handle < 0 or handle >= mt.ref.size or mt.readonly[handle] < 0:
        return np.int64(GNTST_bad_handle)
    frame = np.int64(mt.frame[handle])
    if frame < 0 or frame >= pages.shape[0]:
        return np.int64(GNTST_bad_page)
    if offset < 0 or nbytes < 0 or offset + nbytes > XEN_PAGE_SIZE:
        return np.int64(GNTST_general_error)
    return frame


@kernel(inline="always")
def grant_page_read(pages, mt, handle, offset, dst, dst_off, nbytes):
    """Read ``nbytes`` at ``offset`` of the page behind ``handle`` into ``dst[dst_off:]``.

    Returns ``GNTST_okay``, or ``GNTST_bad_handle`` / ``GNTST_bad_page`` /
    ``GNTST_general_error`` (a range outside the page) without touching anything.
    """
    frame = _mapped_frame(pages, mt, handle, offset, nbytes)
    if frame < 0:
        return frame
    copy_bytes(dst, dst_off, pages[frame], offset, nbytes)
    return np.int64(GNTST_okay)


@kernel(inline="always")
def grant_page_write(pages, mt, handle, offset, src, src_off, nbytes):
    """Write into the page behind ``handle``; ``GNTST_permission_denied`` if mapped read-only.

    This is the page fault a backend would take writing through a read-only mapping; the
    other failures are :func:`grant_page_read`'s.
    """
    frame = _mapped_frame(pages, mt, handle, offset, nbytes)
    if frame < 0:
        return frame
    if mt.readonly[handle] != 0:
        return np.int64(GNTST_permission_denied)
    copy_bytes(pages[frame], offset, src, src_off, nbytes)
    return np.int64(GNTST_okay)


# --- guest memory ----------------------------------------------------------------------------


class xen_domain:
    """A domain: its id, its memory (``pages``) and its grant table.

    Pages are handed out by a simple bump allocator at set-up time (never in a hot path);
    :meth:`alloc_pages` returns physically contiguous runs, as ``__get_free_pages`` does for
    blkfront's multi-page rings.

    Parameters
    ----------
    domid : int
        Domain id (0 for dom0, the backend; 1 for the guest).
    nr_pages : int
        Pages of memory (4096 bytes each). Memory is zeroed lazily by the OS.
    nr_grefs : int
        Entries of the grant table.
    """

    def __init__(self, domid: int, nr_pages: int, nr_grefs: int = 1 << 15):
        self.domid = int(domid)
        raw = np.zeros(nr_pages * XEN_PAGE_SIZE + 4096, np.uint8)
        start = (-raw.ctypes.data) % 4096
        self.pages = raw[start:start + nr_pages * XEN_PAGE_SIZE].reshape(nr_pages, XEN_PAGE_SIZE)
        self.gnttab = new_gnttab(nr_grefs, nr_pages)
        self._next_page = 0

    @property
    def nr_pages(self) -> int:
        return self.pages.shape[0]

    def alloc_pages(self, count: int) -> int:
        """Reserve ``count`` contiguous pages; return the first frame number."""
        if count < 1 or self._next_page + count > self.nr_pages:
            raise XbqError(
                f"domain {self.domid}: cannot allocate {count} page(s); "
                f"{self.nr_pages - self._next_page} of {self.nr_pages} free")
        first = self._next_page
        self._next_page += count
        return first

    def grant(self, peer: int, frame: int, readonly: bool = False) -> int:
        """Claim a reference and grant ``peer`` access to ``frame``; return the reference."""
        ref = gnttab_claim_grant_reference(self.gnttab)
        if ref < 0:
            raise XbqError(f"domain {self.domid}: grant table exhausted")
        gnttab_grant_foreign_access_ref(self.gnttab, ref, peer, frame, readonly)
        return int(ref)

    def stats(self) -> dict[str, int]:
        """Return the grant-table counters by name."""
        return dict(zip(GNTTAB_STATS, (int(v) for v in self.gnttab.stats), strict=True))
