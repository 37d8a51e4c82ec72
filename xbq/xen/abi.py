"""The blkif ABI: constants under their kernel names, message layouts and ring geometry.

Sources: Xen ``xen/include/public/io/{ring,blkif,xenbus,protocols}.h`` and
``grant_table.h``, Linux ``include/xen/interface/io/{ring,blkif}.h`` and
``drivers/block/xen-blkback/common.h`` (see ``docs/glossary.md``). xbq speaks the x86_64 ABI
("x86_64-abi"); the x86_32 request layout is given for reference and tests only.

Units: sectors are 512 bytes everywhere (``sector_number``, ``first_sect``, ``last_sect``,
the ``sectors`` key); a grant page is ``XEN_PAGE_SIZE`` = 4096 bytes = 8 sectors.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

# --- pages and sectors -------------------------------------------------------------------
XEN_PAGE_SHIFT = 12
XEN_PAGE_SIZE = 1 << XEN_PAGE_SHIFT  # bytes; ring "pages" are always 4 KiB
SECTOR_SHIFT = 9
SECTOR_SIZE = 1 << SECTOR_SHIFT  # bytes; the blkif unit for every sector field
SECTORS_PER_PAGE = XEN_PAGE_SIZE // SECTOR_SIZE  # 8

# --- operations (blkif.h) ------------------------------------------------------------------
BLKIF_OP_READ = 0
BLKIF_OP_WRITE = 1
BLKIF_OP_WRITE_BARRIER = 2  # only with feature-barrier
BLKIF_OP_FLUSH_DISKCACHE = 3  # only with feature-flush-cache
BLKIF_OP_RESERVED_1 = 4  # reserved (SLES device-specific packets); Xen header only
BLKIF_OP_DISCARD = 5  # only with feature-discard
BLKIF_OP_INDIRECT = 6  # only with feature-max-indirect-segments

# --- segments and indirect descriptors ------------------------------------------------------
BLKIF_MAX_SEGMENTS_PER_REQUEST = 11
BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8
SEGS_PER_INDIRECT_FRAME = XEN_PAGE_SIZE // 8  # 512 blkif_request_segment per indirect page
MAX_INDIRECT_SEGMENTS = 256  # blkback's advertised feature-max-indirect-segments
MAX_INDIRECT_PAGES = -(-MAX_INDIRECT_SEGMENTS // SEGS_PER_INDIRECT_FRAME)  # 1
BLKFRONT_MAX_INDIRECT_SEGMENTS = 32  # blkfront module parameter max_indirect_segments

# --- response status ------------------------------------------------------------------------
BLKIF_RSP_EOPNOTSUPP = -2
BLKIF_RSP_ERROR = -1
BLKIF_RSP_OKAY = 0

# --- discard flag and vdisk info bits -----------------------------------------------------
BLKIF_DISCARD_SECURE = 1 << 0
VDISK_CDROM = 0x1
VDISK_REMOVABLE = 0x2
VDISK_READONLY = 0x4

# --- protocol strings (protocols.h) -----------------------------------------------------------
XEN_IO_PROTO_ABI_X86_32 = "x86_32-abi"
XEN_IO_PROTO_ABI_X86_64 = "x86_64-abi"
XEN_IO_PROTO_ABI_ARM = "arm-abi"
XEN_IO_PROTO_ABI_NATIVE = XEN_IO_PROTO_ABI_X86_64


# --- xenbus states (xenbus.h) -----------------------------------------------------------------
class XenbusState(IntEnum):
    """The xenbus device states; ``XenbusStateConnected`` is ``XenbusState.Connected``."""

    Unknown = 0
    Initialising = 1
    InitWait = 2
    Initialised = 3
    Connected = 4
    Closing = 5
    Closed = 6
    Reconfiguring = 7
    Reconfigured = 8


XenbusStateUnknown = XenbusState.Unknown
XenbusStateInitialising = XenbusState.Initialising
XenbusStateInitWait = XenbusState.InitWait
XenbusStateInitialised = XenbusState.Initialised
XenbusStateConnected = XenbusState.Connected
XenbusStateClosing = XenbusState.Closing
XenbusStateClosed = XenbusState.Closed
XenbusStateReconfiguring = XenbusState.Reconfiguring
XenbusStateReconfigured = XenbusState.Reconfigured

# --- ring geometry (ring.h, xenbus.h, blkback common.h) ---------------------------------------
XENBUS_MAX_RING_GRANT_ORDER = 4
XENBUS_MAX_RING_GRANTS = 1 << XENBUS_MAX_RING_GRANT_ORDER  # 16 pages
XEN_BLKIF_REQS_PER_PAGE = 32  # pending_req per ring page in blkback

# --- message layouts, x86_64 ABI --------------------------------------------------------------
#: ``struct blkif_request_segment``: 8 bytes on every ABI.
SEGMENT_DTYPE = np.dtype(
    {"names": ["gref", "first_sect", "last_sect"], "formats": ["<u4", "u1", "u1"],
     "offsets": [0, 4, 5], "itemsize": 8}
)

#: ``struct blkif_request`` (read/write form, ``u.rw``), x86_64 ABI: 112 bytes.
REQUEST_DTYPE = np.dtype(
    {"names": ["operation", "nr_segments", "handle", "id", "sector_number", "seg"],
     "formats": ["u1", "u1", "<u2", "<u8", "<u8", (SEGMENT_DTYPE, BLKIF_MAX_SEGMENTS_PER_REQUEST)],
     "offsets": [0, 1, 2, 8, 16, 24], "itemsize": 112}
)

#: ``u.discard`` of ``struct blkif_request``, x86_64 ABI (occupies a 112-byte slot).
REQUEST_DISCARD_DTYPE = np.dtype(
    {"names": ["operation", "flag", "handle", "id", "sector_number", "nr_sectors"],
     "formats": ["u1", "u1", "<u2", "<u8", "<u8", "<u8"],
     "offsets": [0, 1, 2, 8, 16, 24], "itemsize": 112}
)

#: ``u.indirect`` (``struct blkif_request_indirect``), x86_64 ABI: 64 bytes of a 112-byte slot.
REQUEST_INDIRECT_DTYPE = np.dtype(
    {"names": ["operation", "indirect_op", "nr_segments", "id", "sector_number", "handle",
               "indirect_grefs"],
     "formats": ["u1", "u1", "<u2", "<u8", "<u8", "<u2",
                 ("<u4", BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST)],
     "offsets": [0, 1, 2, 8, 16, 24, 28], "itemsize": 112}
)
SIZEOF_REQUEST_INDIRECT = 64

#: ``struct blkif_request`` (read/write form), x86_32 ABI: 108 bytes, ``id`` at offset 4.
REQUEST_X86_32_DTYPE = np.dtype(
    {"names": ["operation", "nr_segments", "handle", "id", "sector_number", "seg"],
     "formats": ["u1", "u1", "<u2", "<u8", "<u8", (SEGMENT_DTYPE, BLKIF_MAX_SEGMENTS_PER_REQUEST)],
     "offsets": [0, 1, 2, 4, 12, 20], "itemsize": 108}
)

#: ``struct blkif_response``, x86_64 ABI: 16 bytes (4 bytes of tail padding).
RESPONSE_DTYPE = np.dtype(
    {"names": ["id", "operation", "status"], "formats": ["<u8", "u1", "<i2"],
     "offsets": [0, 8, 10], "itemsize": 16}
)

#: The header of ``struct blkif_sring``; entries start at byte 64.
SRING_HEADER_DTYPE = np.dtype(
    {"names": ["req_prod", "req_event", "rsp_prod", "rsp_event"],
     "formats": ["<u4", "<u4", "<u4", "<u4"], "offsets": [0, 4, 8, 12], "itemsize": 64}
)

#: ``struct grant_entry_v1`` (grant_table.h): flags, the domain allowed, the frame.
GRANT_ENTRY_V1_DTYPE = np.dtype(
    {"names": ["flags", "domid", "frame"], "formats": ["<u2", "<u2", "<u4"],
     "offsets": [0, 2, 4], "itemsize": 8}
)

# Byte offsets used by the jitted accessors (derived from the dtypes: one source of truth).
REQ_OFF_OPERATION = REQUEST_DTYPE.fields["operation"][1]
REQ_OFF_NR_SEGMENTS = REQUEST_DTYPE.fields["nr_segments"][1]
REQ_OFF_HANDLE = REQUEST_DTYPE.fields["handle"][1]
REQ_OFF_ID = REQUEST_DTYPE.fields["id"][1]
REQ_OFF_SECTOR_NUMBER = REQUEST_DTYPE.fields["sector_number"][1]
REQ_OFF_SEG = REQUEST_DTYPE.fields["seg"][1]
IND_OFF_INDIRECT_OP = REQUEST_INDIRECT_DTYPE.fields["indirect_op"][1]
IND_OFF_NR_SEGMENTS = REQUEST_INDIRECT_DTYPE.fields["nr_segments"][1]
IND_OFF_HANDLE = REQUEST_INDIRECT_DTYPE.fields["handle"][1]
IND_OFF_INDIRECT_GREFS = REQUEST_INDIRECT_DTYPE.fields["indirect_grefs"][1]
DISC_OFF_FLAG = REQUEST_DISCARD_DTYPE.fields["flag"][1]
DISC_OFF_NR_SECTORS = REQUEST_DISCARD_DTYPE.fields["nr_sectors"][1]
SEG_SIZE = SEGMENT_DTYPE.itemsize
SEG_OFF_FIRST_SECT = SEGMENT_DTYPE.fields["first_sect"][1]
SEG_OFF_LAST_SECT = SEGMENT_DTYPE.fields["last_sect"][1]
RSP_OFF_ID = RESPONSE_DTYPE.fields["id"][1]
RSP_OFF_OPERATION = RESPONSE_DTYPE.fields["operation"][1]
RSP_OFF_STATUS = RESPONSE_DTYPE.fields["status"][1]

SRING_OFF_REQ_PROD = 0
SRING_OFF_REQ_EVENT = 4
SRING_OFF_RSP_PROD = 8
SRING_OFF_RSP_EVENT = 12
SRING_RING_OFFSET = 64  # offsetof(struct blkif_sring, ring)
#: ``sizeof(union blkif_sring_entry)``: a request and a response share each slot.
BLKIF_RING_ENTRY_SIZE = max(REQUEST_DTYPE.itemsize, RESPONSE_DTYPE.itemsize)  # 112
BLKIF_RING_ENTRY_SIZE_X86_32 = 108


def __rd32(x: int) -> int:
    """ring.h's ``__RD32``: round a 32-bit unsigned value down to a power of two (0 for 0)."""
    x &= 0xFFFFFFFF
    return 0 if x == 0 else 1 << (x.bit_length() - 1)


def const_ring_size(nbytes: int, entry_size: int = BLKIF_RING_ENTRY_SIZE) -> int:
    """``__CONST_RING_SIZE``: slots that fit in ``nbytes`` of shared ring, a power of two."""
    if nbytes < SRING_RING_OFFSET:
        return 0
    return __rd32((nbytes - SRING_RING_OFFSET) // entry_size)


def ring_size(order: int, entry_size: int = BLKIF_RING_ENTRY_SIZE) -> int:
    """Return ``RING_SIZE`` for a ring of ``2**order`` 4 KiB pages.

    Parameters
    ----------
    order : int
        ``ring-page-order``, 0 to ``XENBUS_MAX_RING_GRANT_ORDER`` (4).
    entry_size : int
        Bytes per ring slot: 112 (x86_64, default) or 108 (x86_32).

    Returns
    -------
    int
        32, 64, 128, 256 or 512 slots for orders 0 to 4.

    Examples
    --------
    >>> [ring_size(o) for o in range(5)]
    [32, 64, 128, 256, 512]
    """
    if not 0 <= order <= XENBUS_MAX_RING_GRANT_ORDER:
        raise ValueError(f"ring-page-order must be 0..{XENBUS_MAX_RING_GRANT_ORDER}, got {order}")
    return const_ring_size(XEN_PAGE_SIZE << order, entry_size)


def sring_bytes(order: int) -> int:
    """Bytes of a shared ring of ``2**order`` pages (``XEN_PAGE_SIZE << order``)."""
    return XEN_PAGE_SIZE << order
