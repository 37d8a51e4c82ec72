"""The virtual block devices behind blkback: a null device and a memory-backed ramdisk.

A device is the namedtuple ``xen_vbd(params, disk)``: ``params`` holds the size in 512-byte
sectors, the logical block size in bytes, the read-only bit and the kind; ``disk`` is the
ramdisk's memory (empty for the null device). The null device completes every request without
touching data, like Linux's ``null_blk``; the ramdisk really copies bytes between the granted
guest pages and its memory, so tests can read back what they wrote.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from xbq._jit import kernel
from xbq.abi import SECTOR_SIZE
from xbq.errors import XbqError

VBD_NULL = 0
VBD_RAMDISK = 1
VBD_KINDS = {"null": VBD_NULL, "ramdisk": VBD_RAMDISK}

V_SECTORS, V_SECTOR_SIZE, V_READONLY, V_KIND = range(4)

EACCES = 13

xen_vbd = namedtuple("xen_vbd", ["params", "disk"])
xen_vbd.__doc__ = """A virtual block device.

params : int64[4]   sectors (512-byte units), logical sector size (bytes), read-only, kind
disk : uint8[n]     the ramdisk's bytes (n = sectors * 512), or empty for the null device
"""


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
    params = np.array([sectors, sector_size, int(readonly), VBD_KINDS[kind]], np.int64)
    return xen_vbd(params, disk)


@kernel
def xen_vbd_translate(vbd, write, sector, nr_sects):
    """blkback ``xen_vbd_translate``: 0, or -EACCES for a write to a read-only device or a
    range that wraps or runs past the end.

    ``sector`` and ``nr_sects`` are the request's unsigned 64-bit fields (512-byte units) and
    are compared as such, as Linux does: a length of 2**63 or more is a huge length, not a
    negative one, and ``sector + nr_sects`` overflowing 64 bits is refused. A zero length (a
    pure flush) is not range-checked.
    """
    if write and vbd.params[V_READONLY]:
        return -EACCES
    start = np.uint64(sector)
    n = np.uint64(nr_sects)
    if n != np.uint64(0):
        end = start + n  # modulo 2**64
        if end < start or end > np.uint64(vbd.params[V_SECTORS]):
            return -EACCES
    return 0


@kernel
def vbd_discard(vbd, sector, nr_sects):
    """Discard a range already checked by :func:`xen_vbd_translate`: the ramdisk reads back
    zeros afterwards; the null device does nothing."""
    if vbd.params[V_KIND] == VBD_RAMDISK and nr_sects > 0:
        vbd.disk[sector * SECTOR_SIZE:(sector + nr_sects) * SECTOR_SIZE] = 0
