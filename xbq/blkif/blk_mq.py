"""The blk-mq glue every engine shares: the queue map, request splitting, stopping a full
hardware queue and restarting it, ring occupancy, and the sizing of blkfront's grant pool.

Linux's block layer sits between fio and blkfront. What of it matters to the ring:

* **the queue map** (:func:`blk_mq_map_queues`): which hardware queue (ring) a vCPU submits
  on, the 2015 default ``cpu * nr_queues / nr_cpus``;
* **splitting** (:func:`blk_rq_nr_pieces`, :func:`blk_rq_piece`): a bio larger than the
  queue's ``max_hw_sectors`` becomes several driver requests;
* **stop and restart** (:func:`blkif_queue_rq`, :func:`kick_pending_request_queues`): when
  ``blkif_queue_rq`` finds the ring full it returns busy and blk-mq stops the hardware queue
  (``blk_mq_stop_hw_queue``); requests that arrive meanwhile wait on the queue's dispatch
  list, in order, and the interrupt handler restarts the queue
  (``blk_mq_start_stopped_hw_queues``), which dispatches them until the ring is full again;
* **occupancy** (:func:`blkif_ring_used`): requests on a ring, from ``RING_FREE_REQUESTS``.

The grant pool behind each queue is sized once, by blkfront
(:func:`xbq.blkif.blkfront.blkfront_grant_pool`, :func:`~xbq.blkif.blkfront.blkfront_pages`).

The hardware queue is one :data:`BLK_MQ_HW_CTX_DTYPE` record per queue with its dispatch list
of :data:`BLK_MQ_RQ_DTYPE` records (``[queue, capacity]``). Locking is the caller's: the ring
lock, as in ``blkif_queue_rq`` and ``blkif_interrupt``. The native engine (real threads), the
twin (virtual time), the loopback and the tests all submit through these two kernels.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from xbq._jit import kernel
from xbq.blkif.blkfront import BLKIF_QUEUE_BUSY, blkif_queue_request
from xbq.xen.memory import MASK32

#: ``blkif_queue_rq``'s answer when the request waits on the stopped queue's dispatch list
#: (blk-mq's ``BLK_STS_RESOURCE``: requeued); distinct from blkfront's ``BLKIF_QUEUE_*``.
BLK_MQ_PARKED = -100

#: ``struct blk_mq_hw_ctx``, what of it the ring sees: stopped, and the dispatch list (a
#: FIFO of ``count`` requests from ``head``) with counters of requests parked and restarts.
BLK_MQ_HW_CTX_DTYPE = np.dtype([("stopped", "<i8"), ("head", "<i8"), ("count", "<i8"),
                                ("parked", "<i8"), ("restarts", "<i8")], align=True)
#: A driver request waiting on the dispatch list.
BLK_MQ_RQ_DTYPE = np.dtype([("tag", "<i8"), ("sector", "<i8"), ("nr_sects", "<i8"),
                            ("operation", "<i8"), ("buf_pfn", "<i8")], align=True)


def blk_mq_map_queues(nr_cpus: int, nr_queues: int) -> np.ndarray:
    """blk-mq's default vCPU -> hardware-queue map of 2015 (``blk_mq_map_queues``).

    With no thread siblings (PV vCPUs have none) each CPU goes to
    ``cpu_to_queue_index(nr_cpus, nr_queues, cpu) = cpu * nr_queues / nr_cpus``: contiguous
    blocks of vCPUs share a queue. (Linux 4.20+ uses ``cpu % nr_queues`` instead.)
    """
    return np.arange(nr_cpus, dtype=np.int64) * nr_queues // nr_cpus


#: A device's hardware queues and their dispatch lists, as kernels take them in one argument.
BlkMq = namedtuple("BlkMq", "hctx dispatch")


def new_hw_queues(nr_queues: int, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """``nr_queues`` running hardware queues, each with room for ``capacity`` waiting
    requests: ``(hctx, dispatch)``."""
    return (np.zeros(nr_queues, BLK_MQ_HW_CTX_DTYPE),
            np.zeros((nr_queues, max(capacity, 1)), BLK_MQ_RQ_DTYPE))


@kernel
def blk_rq_nr_pieces(nr_sects, max_sectors):
    """Driver requests an I/O of ``nr_sects`` becomes when split at ``max_sectors``."""
    if nr_sects <= max_sectors:  # the common case, without a division
        return 1
    return (nr_sects + max_sectors - 1) // max_sectors


@kernel
def blk_rq_piece(nr_sects, max_sectors, p):
    """Piece ``p`` of an I/O split at ``max_sectors``: ``(first sector offset, sectors)``."""
    off = p * max_sectors
    n = nr_sects - off
    return off, (n if n < max_sectors else max_sectors)


@kernel
def blkif_ring_used(ri):
    """Requests on the ring not yet completed: ``RING_SIZE - RING_FREE_REQUESTS``."""
    return (np.int64(ri.req_prod_pvt) - np.int64(ri.rsp_cons)) & MASK32


@kernel
def _park(hctx, dispatch, q, operation, sector, nr_sects, buf_pfn, tag):
    h = hctx[q]
    lst = dispatch[q]
    k = (h.head + h.count) % lst.size
    e = lst[k]
    e.tag = tag
    e.sector = sector
    e.nr_sects = nr_sects
    e.operation = operation
    e.buf_pfn = buf_pfn
    h.count += 1
    h.parked += 1
    h.stopped = 1


@kernel(forceinline=True)
def blkif_queue_rq(hctx, dispatch, info, rinfo, shadow, grants, gnt, mem, q, operation,
                    sector, nr_sects, buf_pfn, tag):
    """blkfront's ``blkif_queue_rq`` (blk-mq's ``queue_rq``) for one driver request on queue
    ``q``, with blk-mq's side of it.

    A stopped queue (or one with requests already waiting) takes the request onto its
    dispatch list, in order. Otherwise it goes to :func:`blkif_queue_request`; if the ring is
    full the queue stops and the request waits. Returns the request id (>= 0),
    ``BLK_MQ_PARKED``, or another ``BLKIF_QUEUE_*`` code. The caller holds the ring lock and
    flushes (``flush_requests``) when a request was queued.
    """
    h = hctx[q]
    if h.stopped or h.count > 0:
        _park(hctx, dispatch, q, operation, sector, nr_sects, buf_pfn, tag)
        return BLK_MQ_PARKED
    rid = blkif_queue_request(info, rinfo, shadow, grants, gnt, mem, q, operation, sector,
                              nr_sects, buf_pfn, tag)
    if rid == BLKIF_QUEUE_BUSY:
        _park(hctx, dispatch, q, operation, sector, nr_sects, buf_pfn, tag)
        return BLK_MQ_PARKED
    return rid


@kernel
def kick_pending_request_queues(hctx, dispatch, info, rinfo, shadow, grants, gnt, mem, q):
    """blkfront's ``kick_pending_request_queues`` from the interrupt handler: blk-mq's
    ``blk_mq_start_stopped_hw_queues`` and ``blk_mq_run_hw_queue`` for queue ``q``, which
    dispatch the waiting requests in order until the list is empty (the queue runs again) or
    the ring is full (it stays stopped).

    Returns the requests queued on the ring (the caller flushes if any), or a negative
    ``BLKIF_QUEUE_*`` code other than busy (the request stays at the list's head).
    """
    h = hctx[q]
    lst = dispatch[q]
    queued = 0
    if h.count > 0:
        h.restarts += 1
    while h.count > 0:
        e = lst[h.head]
        rid = blkif_queue_request(info, rinfo, shadow, grants, gnt, mem, q, e.operation,
                                  e.sector, e.nr_sects, e.buf_pfn, e.tag)
        if rid < 0:
            return queued if rid == BLKIF_QUEUE_BUSY else rid
        h.head = (h.head + 1) % lst.size
        h.count -= 1
        queued += 1
    h.stopped = 0
    return queued
