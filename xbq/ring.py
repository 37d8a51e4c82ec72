"""The shared I/O ring of ring.h on a real byte buffer, with every macro as an ``@njit`` function.

The shared page ``struct blkif_sring`` is a NumPy ``uint8`` array of ``4096 << order`` bytes:
``req_prod``@0, ``req_event``@4, ``rsp_prod``@8, ``rsp_event``@12, 48 bytes of padding, then
``RING_SIZE`` slots of 112 bytes from byte 64 (``xbq.abi``). Each side keeps its private
indices beside it, as ring.h's ``struct blkif_front_ring`` / ``struct blkif_back_ring`` do:

* :data:`FRONT_RING_DTYPE` ``req_prod_pvt``, ``rsp_cons``, ``nr_ents``;
* :data:`BACK_RING_DTYPE` ``rsp_prod_pvt``, ``req_cons``, ``nr_ents``.

A ring is the namedtuple ``blkif_front_ring(sring, pvt)`` (or ``blkif_back_ring``) where
``pvt`` is a one-element array of the private dtype, so the jitted macros change it in place.
Engines keep ``nr_rings`` of them as a 2-D ``sring`` array and a 1-D ``pvt`` array and build
the tuple from row views inside their kernels.

Indices are ``RING_IDX`` (unsigned 32-bit) and run freely: they are stored modulo 2**32, a slot
is ``idx & (RING_SIZE - 1)``, and every difference is taken modulo 2**32 (the kernels compute
in int64 and mask with ``0xFFFFFFFF``).

Barriers sit exactly where ring.h puts them, built from :mod:`xbq.atomic`: producers publish
their index with a release store (``wmb`` then store) and, in the ``*_AND_CHECK_NOTIFY``
forms, a full barrier before reading the peer's event index; ``FINAL_CHECK`` stores the event
index, runs a full barrier and re-reads the producer. That pairing is what rules out the lost
wake-up, and it is what makes these functions correct on real threads, not just in one.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from xbq._jit import kernel
from xbq._mem import (
    load_acquire_u32,
    load_i16,
    load_u16,
    load_u32,
    load_u64,
    memcpy_bytes,
    store_release_u32,
    store_u16,
    store_u32,
    store_u64,
)
from xbq.abi import (
    BLKIF_RING_ENTRY_SIZE,
    SRING_RING_OFFSET,
    const_ring_size,
    ring_size,
    sring_bytes,
)
from xbq.atomic import smp_mb

MASK32 = 0xFFFFFFFF

# Header words of struct blkif_sring, as uint32 indices into sring.view(np.uint32).
REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT = 0, 1, 2, 3

FRONT_RING_DTYPE = np.dtype([("req_prod_pvt", "<u4"), ("rsp_cons", "<u4"), ("nr_ents", "<u4")])
BACK_RING_DTYPE = np.dtype([("rsp_prod_pvt", "<u4"), ("req_cons", "<u4"), ("nr_ents", "<u4")])

blkif_front_ring = namedtuple("blkif_front_ring", ["sring", "pvt"])
blkif_front_ring.__doc__ = (
    "ring.h ``struct blkif_front_ring``: the shared page and the frontend's private indices.")
blkif_back_ring = namedtuple("blkif_back_ring", ["sring", "pvt"])
blkif_back_ring.__doc__ = (
    "ring.h ``struct blkif_back_ring``: the shared page and the backend's private indices.")


# --- byte accessors (little-endian) ------------------------------------------------------------
# One load or store each (xbq._mem), after a bounds check that holds with or without numba's
# NUMBA_BOUNDSCHECK: offsets come from ring indices and request fields, so they are checked.


@kernel(inline="always")
def _check(buf, off, n):
    if off < 0 or off + n > buf.size:
        raise IndexError("byte access outside the buffer")


@kernel(inline="always")
def get_u8(buf, off):
    """Read the byte at ``buf[off]``."""
    return np.int64(buf[off])


@kernel(inline="always")
def get_u16(buf, off):
    """Read the little-endian u16 at byte ``off``."""
    _check(buf, off, 2)
    return np.int64(load_u16(buf, off))


@kernel(inline="always")
def get_i16(buf, off):
    """Read the little-endian s16 at byte ``off``."""
    _check(buf, off, 2)
    return np.int64(load_i16(buf, off))


@kernel(inline="always")
def get_u32(buf, off):
    """Read the little-endian u32 at byte ``off``."""
    _check(buf, off, 4)
    return np.int64(load_u32(buf, off))


@kernel(inline="always")
def get_u64(buf, off):
    """Read the little-endian u64 at byte ``off`` (a ``uint64``)."""
    _check(buf, off, 8)
    return load_u64(buf, off)


@kernel(inline="always")
def put_u8(buf, off, v):
    """Write the byte ``v & 0xff`` at ``buf[off]``."""
    buf[off] = np.uint8(v & 0xFF)


@kernel(inline="always")
def put_u16(buf, off, v):
    """Write ``v & 0xffff`` as a u16 at byte ``off``."""
    _check(buf, off, 2)
    store_u16(buf, off, np.uint16(v & 0xFFFF))


@kernel(inline="always")
def put_i16(buf, off, v):
    """Write ``v`` as an s16 (two's complement) at byte ``off``."""
    _check(buf, off, 2)
    store_u16(buf, off, np.uint16(v & 0xFFFF))


@kernel(inline="always")
def put_u32(buf, off, v):
    """Write ``v & 0xffffffff`` as a u32 at byte ``off``."""
    _check(buf, off, 4)
    store_u32(buf, off, np.uint32(v & MASK32))


@kernel(inline="always")
def put_u64(buf, off, v):
    """Write ``v`` as a u64 at byte ``off``."""
    _check(buf, off, 8)
    store_u64(buf, off, np.uint64(v))


@kernel(inline="always")
def copy_bytes(dst, dst_off, src, src_off, n):
    """Copy ``n`` bytes from ``src[src_off:]`` to ``dst[dst_off:]`` (no overlap)."""
    if n > 0:
        _check(dst, dst_off, n)
        _check(src, src_off, n)
        memcpy_bytes(dst, dst_off, src, src_off, n)


# --- the shared header --------------------------------------------------------------------


@kernel
def SHARED_RING_INIT(sring):
    """ring.h ``SHARED_RING_INIT``: producers 0, both event indices 1, padding zeroed.

    Changes ``sring[0:64]``. Event indices of 1 make request 0 and response 0 notify.
    """
    for k in range(SRING_RING_OFFSET):
        sring[k] = 0
    sring_set(sring, REQ_EVENT, 1)
    sring_set(sring, RSP_EVENT, 1)


@kernel
def __RING_SIZE(sring):
    """ring.h ``__RING_SIZE``: slots in this shared page (entries of 112 bytes, power of two)."""
    n = (sring.size - SRING_RING_OFFSET) // BLKIF_RING_ENTRY_SIZE
    size = 1
    while size * 2 <= n:
        size *= 2
    return size if n > 0 else 0


@kernel
def FRONT_RING_INIT(fr, nr_ents):
    """ring.h ``FRONT_RING_INIT``: ``req_prod_pvt = rsp_cons = 0``; changes ``fr.pvt``."""
    p = fr.pvt[0]
    p.req_prod_pvt = 0
    p.rsp_cons = 0
    p.nr_ents = nr_ents


@kernel
def XEN_FRONT_RING_INIT(fr):
    """ring.h ``XEN_FRONT_RING_INIT``: ``SHARED_RING_INIT`` then ``FRONT_RING_INIT``."""
    SHARED_RING_INIT(fr.sring)
    FRONT_RING_INIT(fr, __RING_SIZE(fr.sring))


@kernel
def BACK_RING_ATTACH(br, start):
    """ring.h ``BACK_RING_ATTACH``: both private indices start at ``start``; changes ``br.pvt``."""
    p = br.pvt[0]
    p.rsp_prod_pvt = start & MASK32
    p.req_cons = start & MASK32
    p.nr_ents = __RING_SIZE(br.sring)


@kernel
def BACK_RING_INIT(br):
    """ring.h ``BACK_RING_INIT``: ``rsp_prod_pvt = req_cons = 0``; changes ``br.pvt``."""
    BACK_RING_ATTACH(br, 0)


@kernel(inline="always")
def RING_SIZE(r):
    """ring.h ``RING_SIZE``: ``nr_ents``."""
    return np.int64(r.pvt[0].nr_ents)


@kernel(inline="always")
def sring_get(sring, word):
    """Acquire-load header word ``word`` (``REQ_PROD`` ... ``RSP_EVENT``) of the shared page."""
    _check(sring, 4 * word, 4)
    return np.int64(load_acquire_u32(sring, 4 * word))


@kernel(inline="always")
def sring_set(sring, word, value):
    """Release-store ``value`` (mod 2**32) into header word ``word`` of the shared page."""
    _check(sring, 4 * word, 4)
    store_release_u32(sring, 4 * word, np.uint32(value & MASK32))


# --- capacity and pending work ------------------------------------------------------------


@kernel
def RING_FREE_REQUESTS(fr):
    """ring.h ``RING_FREE_REQUESTS``: ``size - (req_prod_pvt - rsp_cons)`` (mod 2**32)."""
    p = fr.pvt[0]
    return RING_SIZE(fr) - ((np.int64(p.req_prod_pvt) - np.int64(p.rsp_cons)) & MASK32)


@kernel
def RING_FULL(fr):
    """ring.h ``RING_FULL``: no free request slot (``size`` requests outstanding)."""
    return RING_FREE_REQUESTS(fr) == 0


@kernel
def RING_HAS_UNCONSUMED_RESPONSES(fr):
    """ring.h ``RING_HAS_UNCONSUMED_RESPONSES``: ``rsp_prod - rsp_cons``, a count."""
    return (sring_get(fr.sring, RSP_PROD) - np.int64(fr.pvt[0].rsp_cons)) & MASK32


@kernel
def RING_HAS_UNCONSUMED_REQUESTS(br):
    """ring.h ``RING_HAS_UNCONSUMED_REQUESTS``.

    ``min(req_prod - req_cons, size - (req_cons - rsp_prod_pvt))``: a frontend that inflates
    ``req_prod`` cannot make the backend consume more requests than it has response slots.
    """
    p = br.pvt[0]
    cons = np.int64(p.req_cons)
    unconsumed = (sring_get(br.sring, REQ_PROD) - cons) & MASK32
    rsp = RING_SIZE(br) - ((cons - np.int64(p.rsp_prod_pvt)) & MASK32)
    return unconsumed if unconsumed < rsp else rsp


@kernel
def RING_REQUEST_CONS_OVERFLOW(br, cons):
    """ring.h ``RING_REQUEST_CONS_OVERFLOW``: ``(cons - rsp_prod_pvt) >= size``."""
    return ((cons - np.int64(br.pvt[0].rsp_prod_pvt)) & MASK32) >= RING_SIZE(br)


@kernel
def RING_REQUEST_PROD_OVERFLOW(br, prod):
    """ring.h ``RING_REQUEST_PROD_OVERFLOW``: ``(prod - rsp_prod_pvt) > size`` (bogus frontend)."""
    return ((prod - np.int64(br.pvt[0].rsp_prod_pvt)) & MASK32) > RING_SIZE(br)


@kernel
def RING_RESPONSE_PROD_OVERFLOW(fr, prod):
    """ring.h ``RING_RESPONSE_PROD_OVERFLOW``: ``(prod - rsp_cons) > size`` (bogus backend)."""
    return ((prod - np.int64(fr.pvt[0].rsp_cons)) & MASK32) > RING_SIZE(fr)


# --- slots --------------------------------------------------------------------------------


@kernel(inline="always")
def RING_GET_REQUEST(r, idx):
    """ring.h ``RING_GET_REQUEST``: the byte offset of slot ``idx & (size - 1)`` in ``r.sring``."""
    return SRING_RING_OFFSET + (idx & (RING_SIZE(r) - 1)) * BLKIF_RING_ENTRY_SIZE


RING_GET_RESPONSE = RING_GET_REQUEST


@kernel
def RING_COPY_REQUEST(br, idx, dst):
    """ring.h ``RING_COPY_REQUEST`` (XSA-155): copy slot ``idx`` into the private ``dst``.

    ``dst`` is a ``uint8`` array of at least 112 bytes; every later check reads the copy, which
    the frontend cannot change under the backend's feet. Changes ``dst``.
    """
    copy_bytes(dst, 0, br.sring, RING_GET_REQUEST(br, idx), BLKIF_RING_ENTRY_SIZE)


@kernel
def RING_COPY_RESPONSE(fr, idx, dst):
    """ring.h ``RING_COPY_RESPONSE``: copy the 16-byte response in slot ``idx`` into ``dst``."""
    copy_bytes(dst, 0, fr.sring, RING_GET_RESPONSE(fr, idx), 16)


# --- publishing ---------------------------------------------------------------------------


@kernel
def RING_PUSH_REQUESTS(fr):
    """ring.h ``RING_PUSH_REQUESTS``: write barrier, then ``req_prod = req_prod_pvt``."""
    sring_set(fr.sring, REQ_PROD, np.int64(fr.pvt[0].req_prod_pvt))


@kernel
def RING_PUSH_RESPONSES(br):
    """ring.h ``RING_PUSH_RESPONSES``: write barrier, then ``rsp_prod = rsp_prod_pvt``."""
    sring_set(br.sring, RSP_PROD, np.int64(br.pvt[0].rsp_prod_pvt))


@kernel(inline="always")
def _push_and_check(sring, prod_word, event_word, new):
    old = sring_get(sring, prod_word)
    sring_set(sring, prod_word, new)  # wmb; prod = new
    smp_mb()  # the new index is visible before the event index is read
    event = sring_get(sring, event_word)
    return ((new - event) & MASK32) < ((new - old) & MASK32)


@kernel
def RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(fr):
    """ring.h ``RING_PUSH_REQUESTS_AND_CHECK_NOTIFY``: publish requests; return ``notify``.

    ``notify`` is true iff ``req_event`` lies in the half-open window ``(old, new]`` of the
    producer index, i.e. the backend asked to be woken by one of these requests.
    """
    return _push_and_check(fr.sring, REQ_PROD, REQ_EVENT, np.int64(fr.pvt[0].req_prod_pvt))


@kernel
def RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(br):
    """ring.h ``RING_PUSH_RESPONSES_AND_CHECK_NOTIFY``: publish responses; return ``notify``."""
    return _push_and_check(br.sring, RSP_PROD, RSP_EVENT, np.int64(br.pvt[0].rsp_prod_pvt))


@kernel
def RING_FINAL_CHECK_FOR_REQUESTS(br):
    """ring.h ``RING_FINAL_CHECK_FOR_REQUESTS``: the backend's last look before it sleeps.

    If requests are pending, return their count. Otherwise set ``req_event = req_cons + 1``
    (wake me on the very next request), run a full barrier, and count again. Changes the
    shared ``req_event``.
    """
    more = RING_HAS_UNCONSUMED_REQUESTS(br)
    if more:
        return more
    sring_set(br.sring, REQ_EVENT, np.int64(br.pvt[0].req_cons) + 1)
    smp_mb()
    return RING_HAS_UNCONSUMED_REQUESTS(br)


@kernel
def RING_FINAL_CHECK_FOR_RESPONSES(fr):
    """ring.h ``RING_FINAL_CHECK_FOR_RESPONSES``: ``rsp_event = rsp_cons + 1``, barrier, recount."""
    more = RING_HAS_UNCONSUMED_RESPONSES(fr)
    if more:
        return more
    sring_set(fr.sring, RSP_EVENT, np.int64(fr.pvt[0].rsp_cons) + 1)
    smp_mb()
    return RING_HAS_UNCONSUMED_RESPONSES(fr)


# --- Python-side construction and inspection ----------------------------------------------


def new_sring(order: int = 0, nr_rings: int | None = None) -> np.ndarray:
    """Allocate zeroed shared-ring memory: ``(4096 << order,)`` or ``(nr_rings, 4096 << order)``.

    The buffer is 64-byte aligned, like a page, so every field access is naturally aligned.
    """
    nbytes = sring_bytes(order)
    count = 1 if nr_rings is None else nr_rings
    raw = np.zeros(count * nbytes + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64
    buf = raw[start:start + count * nbytes]
    return buf if nr_rings is None else buf.reshape(count, nbytes)


def new_front_ring(order: int = 0) -> blkif_front_ring:
    """Return a fresh front ring on ``2**order`` pages, after ``XEN_FRONT_RING_INIT``."""
    ring_size(order)  # validates the order
    fr = blkif_front_ring(new_sring(order), np.zeros(1, FRONT_RING_DTYPE))
    XEN_FRONT_RING_INIT(fr)
    return fr


def attach_back_ring(sring: np.ndarray, start: int = 0) -> blkif_back_ring:
    """Return a back ring on an existing shared page, after ``BACK_RING_ATTACH(start)``."""
    if sring.dtype != np.uint8 or sring.ndim != 1 or const_ring_size(sring.size) == 0:
        raise ValueError("sring must be a 1-D uint8 shared-ring buffer of at least one slot")
    br = blkif_back_ring(sring, np.zeros(1, BACK_RING_DTYPE))
    BACK_RING_ATTACH(br, start)
    return br


def sring_header(sring: np.ndarray) -> dict[str, int]:
    """Return the four shared indices of a ring page as a dict (for reports and tests)."""
    words = sring[:16].view(np.uint32)
    return {"req_prod": int(words[REQ_PROD]), "req_event": int(words[REQ_EVENT]),
            "rsp_prod": int(words[RSP_PROD]), "rsp_event": int(words[RSP_EVENT])}
