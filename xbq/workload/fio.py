"""fio-like workloads: block-size splits, read/write mix, random offsets.

A workload is what each fio job draws its next I/O from. ``--workload iometer`` is fio's
``iometer-file-access-server`` job, the one the 2015 cover letter ran::

    bssplit=512/10:1k/5:2k/5:4k/60:8k/2:16k/4:32k/4:64k/10, rwmixread=80, rw=randrw

Any fio-style ``bssplit`` and ``rwmixread`` may be given instead. Offsets are uniformly
random, aligned to the smallest block size (fio's default ``blockalign``), and never run past
the end of the device. Draws come from a job's own :mod:`xbq.workload.rng` stream, so a
seed fixes the whole I/O sequence of every job.

Requests larger than the frontend's ``max_sectors`` (88 sectors without indirect
descriptors, 256 with blkfront's 32 indirect segments) are split by the block layer before
they reach the driver (:mod:`xbq.blkif.blk_mq`).
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.errors import XbqError
from xbq.workload.rng import rng_below, rng_uniform

#: fio's IOmeter file-server block-size split (size/percent pairs).
IOMETER_BSSPLIT = "512/10:1k/5:2k/5:4k/60:8k/2:16k/4:32k/4:64k/10"
#: IOmeter's read percentage.
IOMETER_RWMIXREAD = 80
SECTOR_SIZE = 512
#: Largest block size accepted (bytes): 4 MiB, far beyond any request blkfront builds.
MAX_BLOCK_SIZE = 4 << 20

#: Most block sizes a ``bssplit`` may list.
MAX_BSSPLIT = 64

#: A workload as jitted code sees it, one record: the block sizes in 512-byte sectors and
#: the cumulative probability of each (``nr_sizes`` of them; the last probability is 1.0),
#: the read fraction, the device size and the offset alignment in sectors.
FIO_WORKLOAD_DTYPE = np.dtype([
    ("nr_sizes", "<i8"), ("read_fraction", "<f8"), ("dev_sectors", "<i8"), ("align", "<i8"),
    ("sectors", "<i8", MAX_BSSPLIT), ("cdf", "<f8", MAX_BSSPLIT),
], align=True)

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20}


def parse_size(text: str) -> int:
    """Parse a fio size (``512``, ``4k``, ``64K``, ``1m``) into bytes."""
    t = text.strip().lower()
    unit = t[-1] if t and t[-1] in "bkm" else ""
    number = t[: len(t) - len(unit)]
    if not number.isdigit():
        raise XbqError(f"bad block size {text!r} (expected e.g. 512, 4k, 64k)")
    return int(number) * _UNITS[unit]


def parse_bssplit(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse a fio ``bssplit`` string into block sizes (bytes) and percentages.

    Parameters
    ----------
    spec : str
        ``size/percent`` pairs separated by ``:``, e.g. ``"4k/80:64k/20"``. Percentages must
        be positive and sum to 100.

    Returns
    -------
    sizes : ndarray of int64
        Block sizes in bytes, each a positive multiple of 512.
    percents : ndarray of float64
        Their shares in percent.
    """
    sizes, percents = [], []
    for part in spec.split(":"):
        size_text, sep, pct_text = part.partition("/")
        if not sep:
            raise XbqError(f"bad bssplit entry {part!r} (expected size/percent, e.g. 4k/60)")
        size = parse_size(size_text)
        try:
            pct = float(pct_text)
        except ValueError:
            raise XbqError(f"bad percentage {pct_text!r} in bssplit entry {part!r}") from None
        if size <= 0 or size % SECTOR_SIZE or size > MAX_BLOCK_SIZE:
            raise XbqError(f"block size {size_text!r} must be a multiple of 512 bytes up to 4m")
        if not pct > 0:
            raise XbqError(f"percentage in bssplit entry {part!r} must be positive")
        sizes.append(size)
        percents.append(pct)
    if abs(sum(percents) - 100.0) > 1e-6:
        raise XbqError(f"bssplit percentages sum to {sum(percents):g}, not 100")
    return np.array(sizes, np.int64), np.array(percents, np.float64)


def new_workload(bssplit: str = IOMETER_BSSPLIT, rwmixread: float = IOMETER_RWMIXREAD,
                 dev_sectors: int = 1 << 21) -> np.ndarray:
    """Build a workload for the jitted :func:`next_io`.

    Parameters
    ----------
    bssplit : str
        fio block-size split (see :func:`parse_bssplit`).
    rwmixread : float
        Percentage of reads, 0 to 100.
    dev_sectors : int
        Size of the device in 512-byte sectors; offsets stay inside it.

    Returns
    -------
    numpy.ndarray
        One :data:`FIO_WORKLOAD_DTYPE` record (pass ``wl[0]`` to :func:`next_io`).
    """
    sizes, percents = parse_bssplit(bssplit)
    if not 0 <= rwmixread <= 100:
        raise XbqError(f"rwmixread must be between 0 and 100, not {rwmixread}")
    sectors = sizes // SECTOR_SIZE
    if dev_sectors < sectors.max():
        raise XbqError(f"the device ({dev_sectors} sectors) is smaller than the largest block")
    if sizes.size > MAX_BSSPLIT:
        raise XbqError(f"bssplit lists {sizes.size} block sizes; at most {MAX_BSSPLIT}")
    cdf = np.cumsum(percents) / percents.sum()
    cdf[-1] = 1.0
    wl = np.zeros(1, FIO_WORKLOAD_DTYPE)
    wl["nr_sizes"] = sizes.size
    wl["read_fraction"] = rwmixread / 100.0
    wl["dev_sectors"] = dev_sectors
    wl["align"] = sectors.min()
    wl["sectors"][0, :sizes.size] = sectors
    wl["cdf"][0, :sizes.size] = cdf
    return wl


@kernel(forceinline=True)
def next_io(wl, state):
    """Draw a job's next I/O.

    Parameters
    ----------
    wl : FIO_WORKLOAD_DTYPE record
    state : ndarray of uint64, shape (4,)
        The job's random stream (:func:`xbq.workload.rng.new_streams`).

    Returns
    -------
    is_write : bool
    sector : int64
        First 512-byte sector, a multiple of the alignment.
    nr_sects : int64
        Length in sectors.
    """
    u = rng_uniform(state)
    k = 0
    while k < wl.nr_sizes - 1 and u >= wl.cdf[k]:
        k += 1
    nr_sects = wl.sectors[k]
    is_write = rng_uniform(state) >= wl.read_fraction
    align = np.int64(wl.align)
    slots = (np.int64(wl.dev_sectors) - nr_sects) // align + 1
    sector = rng_below(state, slots) * align
    return is_write, sector, nr_sects


def max_block_sectors(wl: np.ndarray) -> int:
    """The largest block size of a workload, in 512-byte sectors."""
    return int(wl["sectors"][0, :int(wl["nr_sizes"][0])].max())


def mean_request_sectors(wl: np.ndarray) -> float:
    """Expected I/O size in 512-byte sectors (before splitting)."""
    n = int(wl["nr_sizes"][0])
    cdf = wl["cdf"][0, :n]
    probs = np.diff(np.concatenate([[0.0], cdf]))
    return float((probs * wl["sectors"][0, :n]).sum())
