# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A tour of the blkif protocol in xbq
#
# This notebook walks through the protocol core the engines run: the XenStore handshake that
# sets up the rings, the bytes of a request in a ring slot, one round trip through blkfront and
# blkback, what a malicious frontend gets back, and how the event indices batch
# notifications. Everything here is the code the native and discrete-event engines call.

# %% tags=["parameters"]
quick = False  # fewer I/Os in the batching sweep (xbq reproduce --quick)
out_dir = "out"  # (this chapter writes no files)

# %%
import numpy as np
import pandas as pd

from xbq.blkif.blkback import new_blkback
from xbq.blkif.blkfront import new_blkfront
from xbq.blkif.loopback import loopback
from xbq.blkif.negotiate import negotiate
from xbq.blkif.vbd import new_vbd
from xbq.xen.abi import BLKIF_OP_READ, BLKIF_OP_WRITE, REQUEST_DTYPE, RESPONSE_DTYPE, ring_size
from xbq.xen.ring import sring_header

# %% [markdown]
# ## 1. The handshake
#
# A 16-vCPU guest asks for 4 queues (blkfront's default `max_queues`); the backend offers
# as many as dom0 has vCPUs. Both sides walk their xenbus states to Connected.

# %%
conn = negotiate(vcpus=16, max_queues=4, sectors=1 << 16)
print(conn.connected, conn.nr_rings, "rings of", conn.nr_ents, "slots")
print(conn.store.format_tree("/local/domain/1/device/vbd"))

# %% [markdown]
# Ring sizes for each page order, by the real `__RING_SIZE` formula:

# %%
pd.Series({order: ring_size(order) for order in range(5)}, name="slots")

# %% [markdown]
# ## 2. One request, byte by byte
#
# Queue a 4 KiB write on ring 0 and look at the slot as the `blkif_request` structure.
# Each driver keeps its state as the kernel does, one record per lifetime: blkfront a
# `blkfront_info` for the device, a `blkfront_ring_info` per ring (`fe.rinfo`), a
# `blk_shadow` per slot; blkback a `xen_blkif`, a `xen_blkif_ring` per ring (`be.rings`),
# a `pending_req` per slot. The shared ring itself lies in the guest's memory.

# %%
fe = new_blkfront(conn)
be = new_blkback(conn, new_vbd("ramdisk", 1 << 16))
buf = conn.front.alloc_pages(2)
conn.front.pages[buf] = np.frombuffer(b"xbq!" * 1024, np.uint8)
rid = fe.queue_request(0, BLKIF_OP_WRITE, 2048, 8, buf, 1)
slot = fe.sring(0)[64:64 + 112].copy()
req = slot.view(REQUEST_DTYPE)[0]
print("id", req["id"], "op", req["operation"], "nr_segments", req["nr_segments"],
      "sector", req["sector_number"], "first segment", req["seg"][0])
print("shared indices before the push:", sring_header(fe.sring(0)))
pd.DataFrame(fe.rinfo[["req_prod_pvt", "rsp_cons", "evtchn", "shadow_free", "gnt_count",
                       "persistent_gnts_c"]])

# %% [markdown]
# `flush_requests` publishes `req_prod` and notifies the backend because `req_event` (1)
# lies in the window of new requests. The backend consumes, maps the grant, writes the
# ramdisk and answers; the frontend completes.

# %%
print("notified backend:", fe.flush_requests(0))
print("backend returns", be.do_block_io_op(0), "(0: idle, event re-armed)")
n, tags, status = fe.interrupt(0)
print("completed", n, "tag", tags[0], "status", status[0])
print("shared indices after:", sring_header(fe.sring(0)))
rsp = fe.sring(0)[64:64 + 16].copy().view(RESPONSE_DTYPE)[0]
print("response in the same slot:", rsp)

# %% [markdown]
# Read it back into another page: the bytes went through the grant to the ramdisk and back.

# %%
fe.queue_request(0, BLKIF_OP_READ, 2048, 8, buf + 1, 2)
fe.flush_requests(0)
be.do_block_io_op(0)
fe.interrupt(0)
print(bytes(conn.front.pages[buf + 1, :16]), np.array_equal(conn.front.pages[buf],
                                                            conn.front.pages[buf + 1]))

# %% [markdown]
# ## 3. A malicious frontend
#
# Write a request with `last_sect = 9` (past the page) straight into the next slot. The
# backend copies it, finds it invalid, and answers `BLKIF_RSP_ERROR` (-1) without touching
# anything it names.

# %%
sring = fe.sring(0)
idx = sring_header(sring)["req_prod"]
off = 64 + (idx % conn.nr_ents) * 112
bad = np.zeros(1, REQUEST_DTYPE)
bad["operation"], bad["nr_segments"], bad["id"] = BLKIF_OP_READ, 1, 77
bad["seg"][0, 0] = (conn.front.grant(0, buf), 0, 9)
sring[off:off + 112] = bad.view(np.uint8)
sring[0:4] = np.array([idx + 1], np.uint32).view(np.uint8)  # publish req_prod
be.do_block_io_op(0)
print(sring[off:off + 16].copy().view(RESPONSE_DTYPE)[0])
print({k: v for k, v in be.stats().items() if k in ("requests", "responses", "errors")})

# %% [markdown]
# ## 4. Batching and notifications
#
# With one request per flush, every request wakes a sleeping backend. Queue more before each
# flush and the event indices suppress notifications: the counters are produced by the ring
# logic, not assumed.

# %%
rows = []
for batch in (1, 2, 4, 8, 16):
    res = loopback(negotiate(vcpus=1, max_queues=1, sectors=1 << 16),
                   nr_ios=2_000 if quick else 20_000,
                   batch=batch, device="null", seed=batch)
    n = res["front"]["requests"]
    rows.append(dict(batch=batch, requests=res["requests"],
                     front_notify_per_req=res["front"]["notify"] / n,
                     back_notify_per_req=res["back"]["notify"] / n,
                     round_trips_per_s=res["round_trips_per_s"]))
pd.DataFrame(rows)

# %% [markdown]
# The counters of the devices used above:

# %%
pd.DataFrame({"blkfront": pd.Series(fe.stats()),
              "blkback": pd.Series(be.stats())}).astype("Int64")
