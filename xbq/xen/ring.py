"""The shared I/O ring of ring.h on a real byte buffer, every macro as a numba kernel.

The shared page ``struct blkif_sring`` is ``4096 << order`` bytes of guest memory (a ``uint8``
array): ``req_prod``@0, ``req_event``@4, ``rsp_prod``@8, ``rsp_event``@12, 48 bytes of
padding, then ``RING_SIZE`` slots of 112 bytes from byte 64 (:mod:`xbq.xen.abi`). Each side
keeps its private indices beside it, as ring.h's ``struct blkif_front_ring`` /
``struct blkif_back_ring`` do, in the fields of a record:

* front: ``req_prod_pvt``, ``rsp_cons``, ``nr_ents`` (:data:`FRONT_RING_DTYPE`, or the same
  fields of blkfront's ``blkfront_ring_info``);
* back: ``rsp_prod_pvt``, ``req_cons``, ``nr_ents`` (:data:`BACK_RING_DTYPE`, or blkback's
  ``xen_blkif_ring``).

A macro takes the shared page and that record (``RING_FULL(front)``,
``RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(sring, front)``) and changes the record in place.

Indices are ``RING_IDX`` (unsigned 32-bit) and run freely: they are stored modulo 2**32, a
slot is ``idx & (RING_SIZE - 1)``, and every difference is taken modulo 2**32 (the kernels
compute in int64 and mask with ``0xFFFFFFFF``).

Barriers sit exactly where ring.h puts them, built from :mod:`xbq.xen.atomic`: producers
publish their index with a release store (``wmb`` then store) and, in the
``*_AND_CHECK_NOTIFY`` forms, a full barrier before reading the peer's event index;
``FINAL_CHECK`` stores the event index, runs a full barrier and re-reads the producer. That
pairing is what rules out the lost wake-up, and it is what makes these functions correct on
real threads, not just in one.
"""

from __future__ import annotations

import numpy as np

from xbq._jit import kernel
from xbq.xen.abi import (
    BLKIF_RING_ENTRY_SIZE,
    SRING_RING_OFFSET,
    const_ring_size,
    ring_size,
    sring_bytes,
)
from xbq.xen.atomic import smp_mb
from xbq.xen.memory import (
    MASK32,
    _check,
    copy_bytes,
    load_acquire_u32,
    new_memory,
    store_release_u32,
)

# Header words of struct blkif_sring, as u32 indices.
REQ_PROD, REQ_EVENT, RSP_PROD, RSP_EVENT = 0, 1, 2, 3

FRONT_RING_DTYPE = np.dtype([("req_prod_pvt", "<u4"), ("rsp_cons", "<u4"), ("nr_ents", "<u4")])
BACK_RING_DTYPE = np.dtype([("rsp_prod_pvt", "<u4"), ("req_cons", "<u4"), ("nr_ents", "<u4")])


# --- the shared header --------------------------------------------------------------------


@kernel
def sring_get(sring, word):
    """Acquire-load header word ``word`` (``REQ_PROD`` ... ``RSP_EVENT``) of the shared page."""
    _check(sring, 4 * word, 4)
    return np.int64(load_acquire_u32(sring, 4 * word))


@kernel
def sring_set(sring, word, value):
    """Release-store ``value`` (mod 2**32) into header word ``word`` of the shared page."""
    _check(sring, 4 * word, 4)
    store_release_u32(sring, 4 * word, np.uint32(value & MASK32))


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
def FRONT_RING_INIT(front, nr_ents):
    """ring.h ``FRONT_RING_INIT``: ``req_prod_pvt = rsp_cons = 0``; changes ``front``."""
    front.req_prod_pvt = 0
    front.rsp_cons = 0
    front.nr_ents = nr_ents


@kernel
def XEN_FRONT_RING_INIT(sring, front):
    """ring.h ``XEN_FRONT_RING_INIT``: ``SHARED_RING_INIT`` then ``FRONT_RING_INIT``."""
    SHARED_RING_INIT(sring)
    FRONT_RING_INIT(front, __RING_SIZE(sring))


@kernel
def BACK_RING_ATTACH(sring, back, start):
    """ring.h ``BACK_RING_ATTACH``: both private indices start at ``start``; changes ``back``."""
    back.rsp_prod_pvt = start & MASK32
    back.req_cons = start & MASK32
    back.nr_ents = __RING_SIZE(sring)


@kernel
def RING_SIZE(r):
    """ring.h ``RING_SIZE``: ``nr_ents``."""
    return np.int64(r.nr_ents)


# --- capacity and pending work ------------------------------------------------------------


@kernel
def RING_FREE_REQUESTS(front):
    """ring.h ``RING_FREE_REQUESTS``: ``size - (req_prod_pvt - rsp_cons)`` (mod 2**32)."""
    return RING_SIZE(front) - ((np.int64(front.req_prod_pvt) - np.int64(front.rsp_cons))
                               & MASK32)


@kernel
def RING_FULL(front):
    """ring.h ``RING_FULL``: no free request slot (``size`` requests outstanding)."""
    return RING_FREE_REQUESTS(front) == 0


@kernel
def RING_HAS_UNCONSUMED_RESPONSES(sring, front):
    """ring.h ``RING_HAS_UNCONSUMED_RESPONSES``: ``rsp_prod - rsp_cons``, a count."""
    return (sring_get(sring, RSP_PROD) - np.int64(front.rsp_cons)) & MASK32


@kernel
def RING_HAS_UNCONSUMED_REQUESTS(sring, back):
    """ring.h ``RING_HAS_UNCONSUMED_REQUESTS``.

    ``min(req_prod - req_cons, size - (req_cons - rsp_prod_pvt))``: a frontend that inflates
    ``req_prod`` cannot make the backend consume more requests than it has response slots.
    """
    cons = np.int64(back.req_cons)
    unconsumed = (sring_get(sring, REQ_PROD) - cons) & MASK32
    rsp = RING_SIZE(back) - ((cons - np.int64(back.rsp_prod_pvt)) & MASK32)
    return unconsumed if unconsumed < rsp else rsp


@kernel
def RING_REQUEST_CONS_OVERFLOW(back, cons):
    """ring.h ``RING_REQUEST_CONS_OVERFLOW``: ``(cons - rsp_prod_pvt) >= size``."""
    return ((cons - np.int64(back.rsp_prod_pvt)) & MASK32) >= RING_SIZE(back)


@kernel
def RING_REQUEST_PROD_OVERFLOW(back, prod):
    """ring.h ``RING_REQUEST_PROD_OVERFLOW``: ``(prod - rsp_prod_pvt) > size`` (bogus frontend)."""
    return ((prod - np.int64(back.rsp_prod_pvt)) & MASK32) > RING_SIZE(back)


@kernel
def RING_RESPONSE_PROD_OVERFLOW(front, prod):
    """ring.h ``RING_RESPONSE_PROD_OVERFLOW``: ``(prod - rsp_cons) > size`` (bogus backend)."""
    return ((prod - np.int64(front.rsp_cons)) & MASK32) > RING_SIZE(front)


# --- slots --------------------------------------------------------------------------------


@kernel
def RING_GET_REQUEST(r, idx):
    """ring.h ``RING_GET_REQUEST``: the byte offset of slot ``idx & (size - 1)`` in the page."""
    return SRING_RING_OFFSET + (idx & (RING_SIZE(r) - 1)) * BLKIF_RING_ENTRY_SIZE


RING_GET_RESPONSE = RING_GET_REQUEST


@kernel
def RING_COPY_REQUEST(sring, back, idx, dst):
    """ring.h ``RING_COPY_REQUEST`` (XSA-155): copy slot ``idx`` into the private ``dst``.

    ``dst`` is a ``uint8`` array of at least 112 bytes; every later check reads the copy, which
    the frontend cannot change under the backend's feet. Changes ``dst``.
    """
    copy_bytes(dst, 0, sring, RING_GET_REQUEST(back, idx), BLKIF_RING_ENTRY_SIZE)


@kernel
def RING_COPY_RESPONSE(sring, front, idx, dst):
    """ring.h ``RING_COPY_RESPONSE``: copy the 16-byte response in slot ``idx`` into ``dst``."""
    copy_bytes(dst, 0, sring, RING_GET_RESPONSE(front, idx), 16)


# --- publishing ---------------------------------------------------------------------------


@kernel
def _push_and_check(sring, prod_word, event_word, new):
    old = sring_get(sring, prod_word)
    sring_set(sring, prod_word, new)  # wmb; prod = new
    smp_mb()  # the new index is visible before the event index is read
    event = sring_get(sring, event_word)
    return ((new - event) & MASK32) < ((new - old) & MASK32)


@kernel
def RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(sring, front):
    """ring.h ``RING_PUSH_REQUESTS_AND_CHECK_NOTIFY``: publish requests; return ``notify``.

    ``notify`` is true iff ``req_event`` lies in the half-open window ``(old, new]`` of the
    producer index, i.e. the backend asked to be woken by one of these requests.
    """
    return _push_and_check(sring, REQ_PROD, REQ_EVENT, np.int64(front.req_prod_pvt))


@kernel
def RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(sring, back):
    """ring.h ``RING_PUSH_RESPONSES_AND_CHECK_NOTIFY``: publish responses; return ``notify``."""
    return _push_and_check(sring, RSP_PROD, RSP_EVENT, np.int64(back.rsp_prod_pvt))


@kernel
def RING_FINAL_CHECK_FOR_REQUESTS(sring, back):
    """ring.h ``RING_FINAL_CHECK_FOR_REQUESTS``: the backend's last look before it sleeps.

    If requests are pending, return their count. Otherwise set ``req_event = req_cons + 1``
    (wake me on the very next request), run a full barrier, and count again. Changes the
    shared ``req_event``.
    """
    more = RING_HAS_UNCONSUMED_REQUESTS(sring, back)
    if more:
        return more
    sring_set(sring, REQ_EVENT, np.int64(back.req_cons) + 1)
    smp_mb()
    return RING_HAS_UNCONSUMED_REQUESTS(sring, back)


@kernel
def RING_FINAL_CHECK_FOR_RESPONSES(sring, front):
    """ring.h ``RING_FINAL_CHECK_FOR_RESPONSES``: ``rsp_event = rsp_cons + 1``, barrier, recount."""
    more = RING_HAS_UNCONSUMED_RESPONSES(sring, front)
    if more:
        return more
    sring_set(sring, RSP_EVENT, np.int64(front.rsp_cons) + 1)
    smp_mb()
    return RING_HAS_UNCONSUMED_RESPONSES(sring, front)


# --- Python-side construction and inspection ----------------------------------------------


def new_sring(order: int = 0) -> np.ndarray:
    """Zeroed shared-ring memory of ``4096 << order`` bytes (page aligned)."""
    return new_memory(sring_bytes(order) >> 12)


def new_front_ring(order: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fresh front ring on ``2**order`` pages after ``XEN_FRONT_RING_INIT``: ``(sring,
    front)``, ``front`` a one-element :data:`FRONT_RING_DTYPE` array."""
    ring_size(order)  # validates the order
    sring, front = new_sring(order), np.zeros(1, FRONT_RING_DTYPE)
    XEN_FRONT_RING_INIT(sring, front[0])
    return sring, front


def attach_back_ring(sring: np.ndarray, start: int = 0) -> np.ndarray:
    """A back ring on an existing shared page after ``BACK_RING_ATTACH(start)``: a
    one-element :data:`BACK_RING_DTYPE` array."""
    if sring.dtype != np.uint8 or sring.ndim != 1 or const_ring_size(sring.size) == 0:
        raise ValueError("sring must be a 1-D uint8 shared-ring buffer of at least one slot")
    back = np.zeros(1, BACK_RING_DTYPE)
    BACK_RING_ATTACH(sring, back[0], start)
    return back


def sring_header(sring: np.ndarray) -> dict[str, int]:
    """Return the four shared indices of a ring page as a dict (for reports and tests)."""
    words = sring[:16].view(np.uint32)
    return {"req_prod": int(words[REQ_PROD]), "req_event": int(words[REQ_EVENT]),
            "rsp_prod": int(words[RSP_PROD]), "rsp_event": int(words[RSP_EVENT])}
