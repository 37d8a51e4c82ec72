"""``xbq ring``: connect a device and push I/Os through the real rings in one thread."""

from __future__ import annotations

import argparse
import json

from xbq.cli import nonnegative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ring",
        help="run the handshake, then push I/Os through blkfront, the rings and blkback",
        description="Negotiate a device over XenStore, then run an fio workload through the "
        "real protocol in one thread (no time, no concurrency): blkfront queues requests "
        "with grants, blkback copies, validates and serves them, blkfront completes them. "
        "Checks that every request completes exactly once and, on the ramdisk, that every "
        "byte read back is what was written. Reports the protocol's counters and the "
        "round trips per second of this machine.",
    )
    p.add_argument("--queues", type=positive_int, default=1, help="rings to ask for (default 1)")
    p.add_argument("--vcpus", type=positive_int, default=16, help="guest vCPUs (default 16)")
    p.add_argument("--ring-page-order", type=nonnegative_int, default=0,
                   help="frontend's max ring page order (default 0: one page, 32 slots)")
    p.add_argument("--ios", type=positive_int, default=50_000, help="I/Os to run (default 50000)")
    p.add_argument("--batch", type=positive_int, default=1,
                   help="I/Os queued before each flush (default 1: single round trips)")
    p.add_argument("--device", choices=("null", "ramdisk"), default="ramdisk",
                   help="null: no data moves; ramdisk: data copied and verified (default)")
    p.add_argument("--no-persistent", action="store_true", help="map and unmap every grant")
    p.add_argument("--no-indirect", action="store_true",
                   help="backend offers no indirect descriptors (11 segments per request)")
    p.add_argument("--bssplit", default=None, help="fio bssplit (default: IOmeter's)")
    p.add_argument("--rwmixread", type=float, default=None, help="read percentage (default 80)")
    p.add_argument("--seed", type=int, default=0, help="seed of the workload (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xbq.blkif.loopback import loopback
    from xbq.blkif.negotiate import negotiate
    from xbq.errors import NegotiationError
    from xbq.workload.fio import IOMETER_BSSPLIT, IOMETER_RWMIXREAD
    from xbq.xen.abi import MAX_INDIRECT_SEGMENTS

    conn = negotiate(vcpus=args.vcpus, max_queues=args.queues,
                     max_ring_page_order=args.ring_page_order,
                     feature_persistent=not args.no_persistent,
                     backend_max_indirect_segments=0 if args.no_indirect else MAX_INDIRECT_SEGMENTS,
                     sectors=1 << 16)
    if not conn.connected:
        raise NegotiationError(f"handshake failed: {conn.error}")
    result = loopback(conn, nr_ios=args.ios, batch=args.batch, device=args.device,
                      bssplit=args.bssplit or IOMETER_BSSPLIT,
                      rwmixread=IOMETER_RWMIXREAD if args.rwmixread is None else args.rwmixread,
                      seed=args.seed, dev_sectors=1 << 16, repeat=2)
    result.update(rings=conn.nr_rings, ring_page_order=conn.ring_page_order,
                  nr_ents=conn.nr_ents, features=conn.features, device=args.device)
    if args.json:
        print(json.dumps(result))
        return 0
    print(report(result))
    return 0


def report(res: dict) -> str:
    """A short human-readable account of a loopback run."""
    f, b = res["front"], res["back"]
    n = max(f["requests"], 1)  # counters cover every repetition
    lines = [
        f"{res['rings']} ring(s) of {res['nr_ents']} slots (order {res['ring_page_order']}), "
        f"persistent grants {'on' if res['features']['feature_persistent'] else 'off'}, "
        f"indirect segments {res['features']['max_indirect_segments'] or 'off'}, "
        f"{res['device']} device",
        f"{res['ios']} I/Os -> {res['requests']} requests, every one completed exactly once"
        + (", data verified" if res["verified"] else ""),
        f"moved {res['read_bytes'] / 2**20:.1f} MiB read, {res['write_bytes'] / 2**20:.1f} MiB "
        f"written",
        f"notifications per request: front->back {f['notify'] / n:.3f}, "
        f"back->front {b['notify'] / n:.3f}",
        f"grants: {b['map_ops']} maps, {b['unmap_ops']} unmaps, {b['persistent_hits']} "
        f"persistent hits; {f['indirect_requests']} indirect requests",
        f"{res['round_trips_per_s']:,.0f} round trips/s in one thread "
        f"({res['seconds'] * 1e3:.0f} ms for the best of 2 runs)",
    ]
    return "\n".join(lines)
