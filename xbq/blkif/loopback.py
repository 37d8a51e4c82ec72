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

import sys
import time

import numpy as np

from xbq._jit import first_compile, kernel
from xbq.blkif.blk_mq import (
    BLK_MQ_PARKED,
    BlkMq,
    blk_rq_nr_pieces,
    blk_rq_piece,
    blkif_queue_rq,
    kick_pending_request_queues,
    new_hw_queues,
)
from xbq.blkif.blkback import EACCES, do_block_io_op, new_blkback
from xbq.blkif.blkfront import (
    BLKIF_QUEUE_DISCONNECTED,
    BLKIF_QUEUE_INVALID,
    DONE_DTYPE,
    blkif_interrupt,
    flush_requests,
    new_blkfront,
)
from xbq.blkif.vbd import new_vbd
from xbq.errors import ProtocolError, XbqError
from xbq.workload.fio import (
    IOMETER_BSSPLIT,
    IOMETER_RWMIXREAD,
    max_block_sectors,
    new_workload,
    next_io,
)
from xbq.workload.rng import new_streams
from xbq.xen.abi import BLKIF_OP_READ, BLKIF_OP_WRITE, SECTOR_SIZE, SECTORS_PER_PAGE, XEN_PAGE_SIZE
from xbq.xen.memory import copy_bytes

# Kernel results (int64 vector).
OUT_IOS, OUT_REQUESTS, OUT_READ_BYTES, OUT_WRITE_BYTES, OUT_LOST, OUT_DUPLICATED, \
    OUT_BAD_STATUS, OUT_DATA_ERRORS, OUT_RC = range(9)
#: Cold compile of the loopback's kernels on 2 cores (s), quoted by the first-run notice.
COMPILE_S = 20
_self = sys.modules[__name__]
#: The loopback's own stop code: blkfront saw a protocol error (``blkif_interrupt`` < 0).
RC_FRONT_PROTOCOL = -1000
#: Why a loopback stopped, by the code its kernel returns: blkfront's, blkback's, its own.
_RC_NAMES = {BLKIF_QUEUE_INVALID: "a request the device cannot take",
             BLKIF_QUEUE_DISCONNECTED: "the device is not connected",
             -EACCES: "the backend halted a bogus ring",
             RC_FRONT_PROTOCOL: "the frontend saw a protocol error"}


@kernel(forceinline=True)
def _fe_be_round(fe, be, mq, r, done, seen, first_tag, sent, out):
    """Flush ring ``r``, let the backend serve it, take the responses, restart the queue;
    repeat until every request of the step is answered. Returns 0 or a negative code."""
    got_total = 0
    while True:
        flush_requests(fe.rinfo, fe.mem, fe.evtchn, r)
        rc = do_block_io_op(be.blkif, be.rings, be.pending, be.pgnt, be.maptrack, be.gnt,
                            be.active, be.mem, be.evtchn, be.vbd, be.disk, r)
        if rc < 0:
            return rc
        got = blkif_interrupt(fe.info, fe.rinfo, fe.shadow, fe.grants, fe.gnt, fe.mem, r, done)
        if got < 0:
            return RC_FRONT_PROTOCOL
        for k in range(got):
            t = done[k].tag - first_tag
            if t < 0 or t >= sent or seen[t] > 0:
                out[OUT_DUPLICATED] += 1
            else:
                seen[t] = 1
            if done[k].status != 0:
                out[OUT_BAD_STATUS] += 1
        got_total += got
        queued = kick_pending_request_queues(mq.hctx, mq.dispatch, fe.info, fe.rinfo,
                                             fe.shadow, fe.grants, fe.gnt, fe.mem, r)
        if queued < 0:
            return queued
        if mq.hctx[r].count == 0 and queued == 0:
            return 0


@kernel
def _loopback(fe, be, mq, wl, state, steps, buf_pfn, check, scratch, out):
    """Run ``steps = (nr_ios, batch)`` I/Os round-robin over the rings; fill ``out``
    (see ``OUT_*``).

    ``buf_pfn[b]`` is the first guest page of batch slot ``b`` (room for the largest I/O);
    ``check = (disk_shadow, expect)``: the expected disk (empty: no verification) and the
    bytes a read in slot ``b`` must return; ``scratch = (seen, done, slot_read)``: as long
    as the requests of one step, the ring, the batch.
    """
    nr_ios, batch = steps
    disk_shadow, expect = check
    seen, done, slot_read = scratch
    mem = fe.mem
    inf = fe.info[0]
    nr_rings = inf.nr_rings
    maxs = (inf.max_indirect_segments if inf.max_indirect_segments > 0 else 11) \
        * SECTORS_PER_PAGE
    verify = disk_shadow.size > 0
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
                        mem[base + k] = np.uint8((ios * 131 + k * 7) & 0xFF)
                    copy_bytes(disk_shadow, disk_off, mem, base, nbytes)
            else:
                out[OUT_READ_BYTES] += nbytes
                if verify:
                    copy_bytes(expect[b], 0, disk_shadow, disk_off, nbytes)
                    mem[base:base + nbytes] = 0xA5  # must be overwritten by the read
            op = BLKIF_OP_WRITE if is_write else BLKIF_OP_READ
            for p in range(blk_rq_nr_pieces(nsect, maxs)):
                off, n = blk_rq_piece(nsect, maxs, p)
                rid = blkif_queue_rq(mq.hctx, mq.dispatch, fe.info, fe.rinfo, fe.shadow,
                                     fe.grants, fe.gnt, mem, r, op, sector + off, n,
                                     pfn + off // SECTORS_PER_PAGE, next_tag)
                if rid < 0 and rid != BLK_MQ_PARKED:
                    out[OUT_RC] = rid
                    return
                next_tag += 1
            ios += 1
        sent = next_tag - first_tag
        out[OUT_REQUESTS] += sent
        for t in range(sent):
            seen[t] = 0
        rc = _fe_be_round(fe, be, mq, r, done, seen, first_tag, sent, out)
        if rc < 0:
            out[OUT_RC] = rc
            return
        for t in range(sent):
            if seen[t] == 0:
                out[OUT_LOST] += 1
        if verify:
            for b in range(nb):
                n = slot_read[b]
                base = buf_pfn[b] * XEN_PAGE_SIZE
                for k in range(n):
                    if mem[base + k] != expect[b, k]:
                        out[OUT_DATA_ERRORS] += 1
                        break
        r = r + 1 if r + 1 < nr_rings else 0
    out[OUT_IOS] = ios


def loopback(conn, *, nr_ios: int = 100_000, batch: int = 1, device: str = "null",
             verify: bool | None = None, bssplit: str = IOMETER_BSSPLIT,
             rwmixread: float = IOMETER_RWMIXREAD, seed: int = 0, dev_sectors: int = 1 << 16,
             repeat: int = 1) -> dict:
    """Push ``nr_ios`` I/Os through blkfront, the rings and blkback in this thread.

    Parameters
    ----------
    conn : xbq.blkif.negotiate.Connection
        A connected handshake; its rings are used round-robin, one ring per step.
    nr_ios : int
        I/Os (fio-level; each may become several driver requests).
    batch : int
        I/Os queued per step before one ``flush_requests`` (1 = pure round trips). Requests
        that find the ring full wait on the stopped hardware queue and go out when the
        interrupt restarts it (:mod:`xbq.blkif.blk_mq`).
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
        reported (compilation happens before the first, untimed).

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
    fe = new_blkfront(conn)
    be = new_blkback(conn, new_vbd(device, dev_sectors))
    max_bs = max_block_sectors(wl)
    pieces = batch * -(-max_bs // fe.max_sectors)
    hctx, dispatch = new_hw_queues(fe.nr_rings, pieces)
    max_pages = max_bs // SECTORS_PER_PAGE + 1
    first = conn.front.alloc_pages(batch * max_pages)
    buf_pfn = first + max_pages * np.arange(batch, dtype=np.int64)
    disk_shadow = np.zeros(dev_sectors * SECTOR_SIZE if verify else 0, np.uint8)
    expect = np.zeros((batch, max_pages * XEN_PAGE_SIZE) if verify else (batch, 0), np.uint8)
    scratch = (np.zeros(pieces, np.int8), np.zeros(conn.nr_ents, DONE_DTYPE),
               np.zeros(batch, np.int64))
    mq = BlkMq(hctx, dispatch)
    best = float("inf")
    total = np.zeros(OUT_RC + 1, np.int64)
    streams = new_streams(seed, repeat)
    for rep in range(-1, repeat):  # rep -1 runs no I/O: it compiles, outside the timing
        out = np.zeros(OUT_RC + 1, np.int64)
        with first_compile("the protocol loopback", _self, COMPILE_S):
            t0 = time.perf_counter()
            _loopback(fe.arrays(), be.arrays(), mq, wl[0], streams[max(rep, 0)],
                      (nr_ios if rep >= 0 else 0, batch), buf_pfn, (disk_shadow, expect),
                      scratch, out)
        if rep < 0:
            continue
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
        "front": fe.stats(), "back": be.stats(),
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
