"""Grant tables, guest memory and grant mappings (Xen ``grant_table.h``, Linux ``grant-table.c``).

A domain (:class:`xen_domain`) owns real memory (``mem``, ``nr_pages x 4096`` bytes, see
:mod:`xbq.xen.memory`) and a v1 grant table, ``shared``
(:data:`xbq.xen.abi.GRANT_ENTRY_V1_DTYPE`: ``flags``, ``domid``, ``frame``) that it writes to
let a peer map one of its pages. The hypervisor keeps, beside it, one
:data:`ACTIVE_GRANT_DTYPE` record per entry (Xen's ``struct active_grant_entry``: the
mappings pinning it). The mapping
domain records each mapping in its *maptrack* (:data:`MAPTRACK_DTYPE`, one per backend ring,
so ring threads never share one) and gets a handle.

The map checks are Xen's ``_set_status_v1`` and ``map_grant_ref``: ``GNTST_bad_gntref`` for
a reference beyond the table, ``GNTST_general_error`` for an entry that is not a live grant
to the mapping domain, for a writable map of a read-only grant, or for an entry the guest
keeps changing under the exchange, ``GNTST_bad_page`` for an entry whose frame is not a page
of the granting domain, ``GNTST_no_device_space`` when the maptrack is full;
``GNTST_bad_handle`` for unmapping a handle not in use, ``GNTST_permission_denied`` for a
write through a read-only mapping.

The frame is checked once, when Xen maps the grant, and again by every copy through a
handle, so a frontend that writes a grant entry naming a page beyond its memory gets an
error status, never a read or write outside guest memory. Flag updates are the atomic ones
of Xen and Linux: the map path swaps ``flags``/``domid`` as one 32-bit word with ``cmpxchg``
(giving up after four retries on an entry the guest keeps changing), unmap clears
``GTF_reading`` / ``GTF_writing`` with a locked ``and`` (``gnttab_clear_flag``), and the
guest ends access with a check-then-``cmpxchg`` loop (``gnttab_end_foreign_access_ref_v1``).
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.errors import XbqError
from xbq.xen.abi import GRANT_ENTRY_V1_DTYPE, XEN_PAGE_SHIFT, XEN_PAGE_SIZE
from xbq.xen.atomic import and_u16_at, cmpxchg_u16_at, cmpxchg_u32_at, smp_wmb
from xbq.xen.memory import copy_bytes, new_memory

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

#: Byte offset of ``flags`` in a grant entry: ``flags`` and ``domid`` form the 32-bit word
#: Xen swaps (little-endian: ``flags | domid << 16``).
GNT_OFF_FLAGS = GRANT_ENTRY_V1_DTYPE.fields["flags"][1]
assert (GNT_OFF_FLAGS, GRANT_ENTRY_V1_DTYPE.fields["domid"][1]) == (0, 2)
#: ``_set_status_v1`` retries: after this many lost races the entry is "unstable".
GNT_SET_STATUS_RETRIES = 4

#: Xen reserves the first entries of every table for the toolstack (console, xenstore).
GNTTAB_NR_RESERVED_ENTRIES = 8
GRANT_INVALID_REF = 0  # blkfront's marker for "no grant"
DOMID_BACKEND = 0  # dom0 runs blkback
DOMID_FRONTEND = 1  # the guest runs blkfront

#: Xen's ``struct active_grant_entry``, per entry of the granter's table: the mappings of it.
ACTIVE_GRANT_DTYPE = np.dtype([("pin", "<i4"), ("pin_wr", "<i4")])

#: One grant handle of the mapping domain: the reference, the granter's page it reaches,
#: ``readonly`` (1 read-only, 0 writable, -1 a free handle) and the free-list link.
MAPTRACK_DTYPE = np.dtype([("ref", "<i4"), ("frame", "<i4"), ("readonly", "i1"),
                           ("next", "<i4")])
#: The owner of a maptrack (its free list): blkback's ring record has the same two fields.
MAPTRACK_HEAD_DTYPE = np.dtype([("mt_free", "<i4"), ("mt_nfree", "<i4")])


def new_maptrack(nr_handles: int, head) -> np.ndarray:
    """``nr_handles`` free grant handles, linked from ``head`` (a record with ``mt_free`` and
    ``mt_nfree``, which this sets)."""
    mt = np.zeros(nr_handles, MAPTRACK_DTYPE)
    mt["readonly"] = -1
    mt["next"] = np.arange(1, nr_handles + 1)
    mt["next"][-1] = -1
    head["mt_free"] = 0 if nr_handles else -1
    head["mt_nfree"] = nr_handles
    return mt


# --- the granting guest (Linux drivers/xen/grant-table.c) ------------------------------------


@kernel
def gnttab_grant_foreign_access_ref(shared, ref, domid, frame, readonly):
    """Let ``domid`` map the guest page ``frame`` through ``ref`` (read-only if asked).

    The frame and domain are written before the flags, with a write barrier between, as
    Linux's ``gnttab_grant_foreign_access_ref_v1`` does, so Xen never sees a valid entry with
    a stale frame. Changes ``shared[ref]``.
    """
    e = shared[ref]
    e.frame = frame
    e.domid = domid
    smp_wmb()
    e.flags = GTF_permit_access | (GTF_readonly if readonly else 0)


@kernel
def gnttab_query_foreign_access(shared, ref):
    """True while the peer still has ``ref`` mapped (``GTF_reading``/``GTF_writing`` set)."""
    return (shared[ref].flags & (GTF_reading | GTF_writing)) != 0


@kernel
def gnttab_end_foreign_access_ref(shared, ref):
    """Revoke ``ref``; return False (and change nothing) while the peer still maps it.

    Linux's ``gnttab_end_foreign_access_ref_v1``: read the flags, refuse if ``GTF_reading`` or
    ``GTF_writing`` is set, else ``cmpxchg`` them to 0, and retry if Xen changed them between
    the read and the exchange (a map racing the revocation). The loop is bounded: each retry
    means the hypervisor changed the entry, which it does at most once per map or unmap.
    """
    for _ in range(1 << 16):
        flags = np.int64(shared[ref].flags)
        if flags & (GTF_reading | GTF_writing):
            return False
        if np.int64(cmpxchg_u16_at(shared, ref, GNT_OFF_FLAGS, flags, GTF_invalid)) == flags:
            return True
    return False


# --- the hypervisor, on behalf of the mapping domain -----------------------------------------


@kernel
def _clear_pin_flags(shared, active, ref, readonly):
    """Clear the flags a mapping set, when no other mapping of ``ref`` needs them."""
    if not readonly and active[ref].pin_wr == 0:
        and_u16_at(shared, ref, GNT_OFF_FLAGS, ~GTF_writing & 0xFFFF)
    if active[ref].pin == 0:
        and_u16_at(shared, ref, GNT_OFF_FLAGS, ~GTF_reading & 0xFFFF)


@kernel(forceinline=True)
def gnttab_map_grant_ref(shared, active, nr_frames, ref, domid, readonly, mt, head):
    """``GNTTABOP_map_grant_ref``: map ``ref`` of the granter for ``domid``.

    Parameters
    ----------
    shared, active : the granter's table and its active entries
    nr_frames : int
        Pages the granter owns; a grant naming another frame is refused.
    ref, domid, readonly : the reference, the mapping domain, a read-only mapping?
    mt, head : the mapping domain's maptrack and the record owning its free list

    Returns
    -------
    int
        A grant handle (>= 0) or a negative ``GNTST_*`` status (see the module docstring).

    Notes
    -----
    As Xen's ``_set_status_v1``: the entry's ``flags`` and ``domid`` are read as one word,
    checked, and swapped for the same word with ``GTF_reading`` (and ``GTF_writing``) set by
    ``cmpxchg``; a guest that changes the word in between makes the exchange fail, and after
    ``GNT_SET_STATUS_RETRIES`` lost races the map fails. The frame is read after the flags
    are set (it may not change while the entry is in use). Changes ``shared[ref].flags``,
    ``active[ref]``, ``mt``, ``head``.
    """
    if ref < 0 or ref >= shared.size:
        return GNTST_bad_gntref
    if head.mt_nfree == 0:
        return GNTST_no_device_space
    pin = GTF_reading if readonly else (GTF_reading | GTF_writing)
    rc = GNTST_general_error
    for _ in range(GNT_SET_STATUS_RETRIES + 1):
        e = shared[ref]
        scombo = np.int64(e.flags) | (np.int64(e.domid) << 16)
        flags = scombo & 0xFFFF
        if (flags & GTF_type_mask) != GTF_permit_access or (scombo >> 16) != domid:
            break
        if not readonly and (flags & GTF_readonly):
            break
        prev = np.int64(cmpxchg_u32_at(shared, ref, GNT_OFF_FLAGS, scombo, scombo | pin))
        if prev == scombo:
            rc = GNTST_okay
            break
    if rc != GNTST_okay:
        return rc
    frame = np.int64(shared[ref].frame)
    if frame >= nr_frames:
        _clear_pin_flags(shared, active, ref, readonly)  # undo (no mapping was made)
        return GNTST_bad_page
    handle = np.int64(head.mt_free)
    m = mt[handle]
    head.mt_free = m.next
    head.mt_nfree -= 1
    m.ref = ref
    m.frame = frame
    m.readonly = 1 if readonly else 0
    a = active[ref]
    a.pin += 1
    if not readonly:
        a.pin_wr += 1
    return handle


@kernel
def gnttab_unmap_grant_ref(shared, active, mt, head, handle):
    """``GNTTABOP_unmap_grant_ref``: drop mapping ``handle``; return a ``GNTST_*`` status.

    Clears ``GTF_writing`` / ``GTF_reading`` in the granter's entry when the last writable /
    last mapping goes. Changes ``shared``, ``active``, ``mt``, ``head``.
    """
    if handle < 0 or handle >= mt.size or mt[handle].readonly < 0:
        return GNTST_bad_handle
    m = mt[handle]
    ref = m.ref
    readonly = m.readonly != 0
    active[ref].pin -= 1
    if not readonly:
        active[ref].pin_wr -= 1
    _clear_pin_flags(shared, active, ref, readonly)
    m.readonly = -1
    m.next = head.mt_free
    head.mt_free = handle
    head.mt_nfree += 1
    return GNTST_okay


@kernel
def _mapped_offset(mem, mt, handle, offset, nbytes):
    """Byte offset in ``mem`` of ``offset`` in the page behind a live ``handle``, or a
    negative ``GNTST_*`` status (a bad handle, a frame outside ``mem``, a range past the
    page)."""
    if handle < 0 or handle >= mt.size or mt[handle].readonly < 0:
        return np.int64(GNTST_bad_handle)
    frame = np.int64(mt[handle].frame)
    if frame < 0 or (frame + 1) << XEN_PAGE_SHIFT > mem.size:
        return np.int64(GNTST_bad_page)
    if offset < 0 or nbytes < 0 or offset + nbytes > XEN_PAGE_SIZE:
        return np.int64(GNTST_general_error)
    return (frame << XEN_PAGE_SHIFT) + offset


@kernel
def grant_page_read(mem, mt, handle, offset, dst, dst_off, nbytes):
    """Read ``nbytes`` at ``offset`` of the page behind ``handle`` into ``dst[dst_off:]``.

    Returns ``GNTST_okay``, or ``GNTST_bad_handle`` / ``GNTST_bad_page`` /
    ``GNTST_general_error`` (a range outside the page) without touching anything.
    """
    at = _mapped_offset(mem, mt, handle, offset, nbytes)
    if at < 0:
        return at
    copy_bytes(dst, dst_off, mem, at, nbytes)
    return np.int64(GNTST_okay)


@kernel
def grant_page_write(mem, mt, handle, offset, src, src_off, nbytes):
    """Write into the page behind ``handle``; ``GNTST_permission_denied`` if mapped read-only.

    This is the page fault a backend would take writing through a read-only mapping; the
    other failures are :func:`grant_page_read`'s.
    """
    at = _mapped_offset(mem, mt, handle, offset, nbytes)
    if at < 0:
        return at
    if mt[handle].readonly != 0:
        return np.int64(GNTST_permission_denied)
    copy_bytes(mem, at, src, src_off, nbytes)
    return np.int64(GNTST_okay)


# --- guest memory and its grant table ----------------------------------------------------------


class xen_domain:
    """A domain: its id, its memory and its grant table.

    Attributes
    ----------
    domid : int
    mem : uint8[nr_pages * 4096]
        The domain's memory (page aligned); ``pages`` is the same as ``(nr_pages, 4096)``.
    shared : GRANT_ENTRY_V1_DTYPE[nr_grefs]
        Its grant table, as the guest writes it.
    active : ACTIVE_GRANT_DTYPE[nr_grefs]
        The hypervisor's active entries of that table.
    counts : dict
        Maps, unmaps and failed maps made through :meth:`map_grant_ref` (set-up code); the
        backend's data path counts its own (``blkback`` statistics).
    free : list of int
        Unclaimed references (the guest's free list; ``free[-1]`` is claimed next).

    Pages are handed out by a bump allocator at set-up time (never in a hot path);
    :meth:`alloc_pages` returns physically contiguous runs, as ``__get_free_pages`` does for
    blkfront's multi-page rings.
    """

    def __init__(self, domid: int, nr_pages: int, nr_grefs: int = 1 << 15):
        if nr_grefs <= GNTTAB_NR_RESERVED_ENTRIES:
            raise ValueError(f"a grant table needs more than {GNTTAB_NR_RESERVED_ENTRIES} "
                             "entries")
        self.domid = int(domid)
        self.mem = new_memory(nr_pages)
        self.pages = self.mem.reshape(nr_pages, XEN_PAGE_SIZE)
        self.shared = np.zeros(nr_grefs, GRANT_ENTRY_V1_DTYPE)
        self.active = np.zeros(nr_grefs, ACTIVE_GRANT_DTYPE)
        self.counts = {"map_ops": 0, "unmap_ops": 0, "map_errors": 0}
        self.free = list(range(nr_grefs - 1, GNTTAB_NR_RESERVED_ENTRIES - 1, -1))
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

    def gnttab_claim_grant_reference(self) -> int:
        """Take a free grant reference; -1 if none is left."""
        return self.free.pop() if self.free else -1

    def gnttab_release_grant_reference(self, ref: int) -> None:
        """Return ``ref`` to the free list."""
        self.free.append(int(ref))

    def gnttab_alloc_grant_references(self, count: int) -> np.ndarray:
        """Claim ``count`` references at once (set-up time); raise if too few are free."""
        if count > len(self.free):
            raise XbqError(f"grant table exhausted: {count} references needed, "
                           f"{len(self.free)} free")
        refs = [self.free.pop() for _ in range(count)]
        return np.array(refs, np.int32)

    def grant(self, peer: int, frame: int, readonly: bool = False) -> int:
        """Claim a reference and grant ``peer`` access to ``frame``; return the reference."""
        ref = self.gnttab_claim_grant_reference()
        if ref < 0:
            raise XbqError(f"domain {self.domid}: grant table exhausted")
        gnttab_grant_foreign_access_ref(self.shared, ref, peer, frame, readonly)
        return ref

    def map_grant_ref(self, ref: int, domid: int, readonly: bool, mt, head) -> int:
        """:func:`gnttab_map_grant_ref` on this domain's table (for set-up code)."""
        h = int(gnttab_map_grant_ref(self.shared, self.active, self.nr_pages, ref, domid,
                                     readonly, mt, head))
        self.counts["map_ops" if h >= 0 else "map_errors"] += 1
        return h

    def unmap_grant_ref(self, mt, head, handle: int) -> int:
        """:func:`gnttab_unmap_grant_ref` on this domain's table (for set-up code)."""
        rc = int(gnttab_unmap_grant_ref(self.shared, self.active, mt, head, handle))
        self.counts["unmap_ops"] += rc == GNTST_okay
        return rc

    def stats(self) -> dict[str, int]:
        """The set-up maps of this granter's pages (:attr:`counts`) and the free references."""
        return {**self.counts, "free_count": len(self.free)}
