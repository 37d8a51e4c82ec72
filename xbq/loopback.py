"""The protocol in one thread: blkfront and blkback take turns on the real rings.

This is the smallest complete use of the protocol core and the unit the round-trip
benchmark measures. Each step, the frontend puts ``batch`` I/Os of an fio workload on one
ring (each split at ``max_sectors`` as the block layer would) and publishes them with
``flush_requests``; the backend runs ``do_block_io_op`` on that ring (copy, validate, map,
device, ``make_response``); the frontend runs ``blkif_interrupt``. Every driver request must
come back exactly once, with its own tag and an OKAY status. With the ramdisk and
``verify``, every write also goes to a shadow copy of the disk and every read is compared
with what the shadow held when the read was queued, so a byte that went astray in the
grants or the ring fails the run.

There is no time and no concurrency here: the engines (native threads, the discrete-event
twin) add those around the same calls.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from xbq.abi import BLKIF_OP_READ, BLKIF_OP_WRITE, SECTOR_SIZE, SECTORS_PER_PAGE, XEN_PAGE_SIZE
from xbq.blkback import blkback_stats, do_block_io_op, new_blkback
from xbq.blkfront import (
    P_MAX_INDIRECT,
    blkfront_stats,
    blkif_interrupt,
    blkif_queue_request,
    flush_requests,
    new_blkfront,
)
from xbq.errors import ProtocolError, XbqError
from xbq.rng import new_streams
from xbq.vbd import new_vbd
from xbq.workload import IOMETER_BSSPLIT, IOMETER_RWMIXREAD, new_workload, next_io

# Kernel results (int64 vector).
OUT_IOS, OUT_REQUESTS, OUT_READ_BYTES, OUT_WRITE_BYTES, OUT_LOST, OUT_DUPLICATED, \
    OUT_BAD_STATUS, OUT_DATA_ERRORS, OUT_RC = range(9)
_RC_NAMES = {-1: "the ring or the grant pool was full", -2: "a request the device cannot take",
             -3: "the device is not connected", -13: "the backend halted a bogus ring",
             -100: "the frontend saw a protocol error", -101: "responses went missing"}


@njit(cache=True, nogil=True)
def _max_sectors(fi):
    segs = fi.params[P_MAX_INDIRECT]
    return (segs if segs > 0 else 11) * SECTORS_PER_PAGE


@njit(cache=True, nogil=True)
def _loopback(fi, be, wl, state, nr_ios, batch, buf_pfn, pages, shadow, expect, out):
    """Run ``nr_ios`` I/Os round-robin over the rings; fill ``out`` (see ``OUT_*``).

    ``buf_pfn[b]`` is the first guest page of batch slot ``b`` (room for the largest I/O);
    ``shadow`` is the expected disk (empty: no verification), ``expect[b]`` the bytes a read
    in slot ``b`` must return.
    """
    nr_rings = fi.shadow.shape[0]
    maxs = _max_sectors(fi)
    tags = np.zeros(fi.shadow.shape[1], np.int64)
    statuses = np.zeros_like(tags)
    seen = np.zeros(1, np.int8)
    verify = shadow.size > 0
    flat = pages.reshape(-1)
    slot_read = np.zeros(batch, np.int64)  # bytes read into each slot (0: a write)
    next_tag = 0
    ios = 0
    r = 0
    while ios < nr_ios:
        first_tag = next_tag
        nb = min(batch, nr_ios - ios)
        for b in range(nb):
            is_write, sector, nsect = next_io(wl, state)
            pfn = buf_pfn[b]
            base = pfn * XEN_PAGE_SIZE
            nbytes = nsect * SECTOR_SIZE
            disk_off = sector * SECTOR_SIZE
            slot_read[b] = 0 if is_write else nbytes
            if is_write:
                out[OUT_WRITE_BYTES] += nbytes
                if verify:
                    for k in range(nbytes):
                        flat[base + k] = np.uint8((ios * 131 + k * 7) & 0xFF)
                    shadow[disk_off:disk_off + nbytes] = flat[base:base + nbytes]
            else:
                out[OUT_READ_BYTES] += nbytes
                if verify:
                    expect[b, :nbytes] = shadow[disk_off:disk_off + nbytes]
                    flat[base:base + nbytes] = 0xA5  # must be overwritten by the read
            op = BLKIF_OP_WRITE if is_write else BLKIF_OP_READ
            done = 0
            while done < nsect:
                n = min(nsect - done, maxs)
                rid = blkif_queue_request(fi, r, op, sector + done, n,
                                          pfn + done // SECTORS_PER_PAGE, next_tag)
                if rid < 0:
                    out[OUT_RC] = rid
                    return
                next_tag += 1
                done += n
            ios += 1
        sent = next_tag - first_tag
        out[OUT_REQUESTS] += sent
        if seen.size < sent:
            seen = np.zeros(2 * sent, np.int8)
        seen[:sent] = 0
        flush_requests(fi, r)
        rc = do_block_io_op(be, r)
        if rc < 0:
            out[OUT_RC] = rc
            return
        got = blkif_interrupt(fi, r, tags, statuses)
        if got < 0:
            out[OUT_RC] = -100
            return
        for k in range(got):
            t = tags[k] - first_tag
            if t < 0 or t >= sent or seen[t] > 0:
                out[OUT_DUPLICATED] += 1
            else:
                seen[t] = 1
            if statuses[k] != 0:
                out[OUT_BAD_STATUS] += 1
        for t in range(sent):
            if seen[t] == 0:
                out[OUT_LOST] += 1
        if verify:
            for b in range(nb):
                n = slot_read[b]
                base = buf_pfn[b] * XEN_PAGE_SIZE
                for k in range(n):
                    if flat[base + k] != expect[b, k]:
                        out[OUT_DATA_ERRORS] += 1
                        break
        r = (r + 1) % nr_rings
    out[OUT_IOS] = ios


def loopback(conn, *, nr_ios: int = 100_000, batch: int = 1, device: str = "null",
             verify: bool | None = None, bssplit: str = IOMETER_BSSPLIT,
             rwmixread: float = IOMETER_RWMIXREAD, seed: int = 0, dev_sectors: int = 1 << 16,
             repeat: int = 1) -> dict:
    """Push ``nr_ios`` I/Os through blkfront, the rings and blkback in this thread.

    Parameters
    ----------
    conn : xbq.xenbus.Connection
        A connected handshake; its rings are used round-robin, one ring per step.
    nr_ios : int
        I/Os (fio-level; each may become several driver requests).
    batch : int
        I/Os queued per step before one ``flush_requests`` (1 = pure round trips). At most
        the ring size.
    device : {"null", "ramdisk"}
    verify : bool, optional
        Check read data against a shadow disk (default: on for the ramdisk).
    bssplit, rwmixread : str, float
        The fio workload (default: IOmeter).
    seed : int
    dev_sectors : int
        Device size in 512-byte sectors (the ramdisk and the shadow each take this much).
    repeat : int
        Run the whole thing this many times on the same devices; the best wall time is
        reported (the first also pays any JIT compilation).

    Returns
    -------
    dict
        ``ios``, ``requests``, ``read_bytes``, ``write_bytes``, ``seconds`` (best run),
        ``round_trips_per_s`` (driver requests / s), ``ios_per_s``, and the frontend's and
        backend's counters (``front``, ``back``).

    Raises
    ------
    ProtocolError
        If a request was lost, duplicated, failed, or read back different data.
    """
    if nr_ios < 1 or batch < 1 or repeat < 1:
        raise XbqError("nr_ios, batch and repeat must be at least 1")
    verify = device == "ramdisk" if verify is None else verify
    if verify and device != "ramdisk":
        raise XbqError("data can only be verified on the ramdisk")
    wl = new_workload(bssplit, rwmixread, dev_sectors)
    fi = new_blkfront(conn)
    per_io = -(-int(wl.sectors.max()) // int(_max_sectors(fi)))
    if batch * per_io > conn.nr_ents:
        raise XbqError(f"batch {batch} may need {batch * per_io} requests, more than the ring's "
                       f"{conn.nr_ents} slots")
    be = new_blkback(conn, new_vbd(device, dev_sectors))
    max_pages = int(wl.sectors.max()) // SECTORS_PER_PAGE + 1
    first = conn.front.alloc_pages(batch * max_pages)
    buf_pfn = first + max_pages * np.arange(batch, dtype=np.int64)
    shadow = np.zeros(dev_sectors * SECTOR_SIZE if verify else 0, np.uint8)
    expect = np.zeros((batch, max_pages * XEN_PAGE_SIZE) if verify else (batch, 0), np.uint8)
    best = float("inf")
    total = np.zeros(OUT_RC + 1, np.int64)
    for rep in range(repeat):
        out = np.zeros(OUT_RC + 1, np.int64)
        state = new_streams(seed, repeat)[rep]
        t0 = time.perf_counter()
        _loopback(fi, be, wl, state, nr_ios, batch, buf_pfn, conn.front.pages, shadow,
                  expect, out)
        best = min(best, time.perf_counter() - t0)
        _check(out)
        total += out
    requests = int(total[OUT_REQUESTS]) // repeat
    return {
        "ios": nr_ios, "requests": requests,
        "read_bytes": int(total[OUT_READ_BYTES]) // repeat,
        "write_bytes": int(total[OUT_WRITE_BYTES]) // repeat,
        "verified": bool(verify), "seconds": best,
        "round_trips_per_s": requests / best, "ios_per_s": nr_ios / best,
        "front": blkfront_stats(fi), "back": blkback_stats(be),
    }


def _check(out: np.ndarray) -> None:
    rc = int(out[OUT_RC])
    if rc:
        raise ProtocolError(f"loopback stopped: {_RC_NAMES.get(rc, f'status {rc}')}")
    problems = [f"{int(out[i])} {name}" for i, name in (
        (OUT_LOST, "lost"), (OUT_DUPLICATED, "duplicated"),
        (OUT_BAD_STATUS, "failed"), (OUT_DATA_ERRORS, "read back wrong data")) if out[i]]
    if problems:
        raise ProtocolError("requests " + ", ".join(problems))
