"""The virtual block devices behind blkback: a null device and a memory-backed ramdisk.

A device is blkback's ``struct xen_vbd``: one :data:`XEN_VBD_DTYPE` record (size in 512-byte
sectors, logical block size in bytes, read-only, kind) and, for the ramdisk, its memory
(``disk``; empty for the null device). The null device completes every request without
touching data, like Linux's ``null_blk``; the ramdisk really copies bytes between the
granted guest pages and its memory, so tests can read back what they wrote.
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.errors import XbqError
from xbq.xen.abi import SECTOR_SIZE

VBD_NULL = 0
VBD_RAMDISK = 1
VBD_KINDS = {"null": VBD_NULL, "ramdisk": VBD_RAMDISK}

EACCES = 13

#: ``struct xen_vbd``, what of it blkback's data path reads.
XEN_VBD_DTYPE = np.dtype([("sectors", "<i8"), ("sector_size", "<i8"), ("readonly", "<i8"),
                          ("kind", "<i8")], align=True)


class xen_vbd:
    """A virtual block device: ``vbd`` (one :data:`XEN_VBD_DTYPE` record) and ``disk`` (the
    ramdisk's bytes, ``sectors * 512``, or empty for the null device)."""

    def __init__(self, vbd: np.ndarray, disk: np.ndarray):
        self.vbd, self.disk = vbd, disk

    @property
    def sectors(self) -> int:
        return int(self.vbd[0]["sectors"])


def new_vbd(kind: str = "null", sectors: int = 1 << 21, sector_size: int = SECTOR_SIZE,
            readonly: bool = False) -> xen_vbd:
    """Create a device.

    Parameters
    ----------
    kind : {"null", "ramdisk"}
    sectors : int
        Size in 512-byte sectors (default 2**21 = 1 GiB; a ramdisk allocates it lazily).
    sector_size : int
        Logical block size in bytes (512 or 4096); requests must be aligned to it.
    readonly : bool
        Refuse write-type requests (the vbd's ``mode`` is "r").
    """
    if kind not in VBD_KINDS:
        raise XbqError(f"unknown device {kind!r}; choose from {', '.join(VBD_KINDS)}")
    if sectors < 1 or sector_size % SECTOR_SIZE or sector_size < SECTOR_SIZE:
        raise XbqError("a device needs >= 1 sector and a sector size that is a multiple of 512")
    disk = np.zeros(sectors * SECTOR_SIZE if kind == "ramdisk" else 0, np.uint8)
    vbd = np.zeros(1, XEN_VBD_DTYPE)
    vbd[0] = (sectors, sector_size, int(readonly), VBD_KINDS[kind])
    return xen_vbd(vbd, disk)


@kernel
def xen_vbd_translate(vbd, write, sector, nr_sects):
    """blkback ``xen_vbd_translate``: 0, or -EACCES for a write to a read-only device or a
    range that wraps or runs past the end.

    ``vbd`` is the device's record. ``sector`` and ``nr_sects`` are the request's unsigned
    64-bit fields (512-byte units) and are compared as such, as Linux does: a length of 2**63
    or more is a huge length, not a negative one, and ``sector + nr_sects`` overflowing 64
    bits is refused. A zero length (a pure flush) is not range-checked.
    """
    if write and vbd.readonly:
        return -EACCES
    start = np.uint64(sector)
    n = np.uint64(nr_sects)
    if n != np.uint64(0):
        end = start + n  # modulo 2**64
        if end < start or end > np.uint64(vbd.sectors):
            return -EACCES
    return 0


@kernel
def vbd_discard(vbd, disk, sector, nr_sects):
    """Discard a range already checked by :func:`xen_vbd_translate`: the ramdisk reads back
    zeros afterwards; the null device does nothing."""
    if vbd.kind == VBD_RAMDISK and nr_sects > 0:
        disk[sector * SECTOR_SIZE:(sector + nr_sects) * SECTOR_SIZE] = 0
