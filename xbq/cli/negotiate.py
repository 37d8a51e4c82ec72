"""``xbq negotiate``: run the blkfront/blkback XenStore handshake and print the store."""

from __future__ import annotations

import argparse
import json

from xbq.cli import nonnegative_int, positive_int

#: Largest forced ring order / queue count (``xbq.blkif.negotiate.MAX_FORCED_*``, kept here so that
#: ``xbq --help`` does not import the protocol modules).
MAX_FORCED_RING_ORDER = 8
MAX_FORCED_QUEUES = 1024


def _bounded(high: int):
    """argparse type: an integer in 0..high."""
    def parse(text: str) -> int:
        value = nonnegative_int(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"{text!r} must be at most {high}")
        return value
    return parse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "negotiate",
        help="run the xenbus handshake of blkfront and blkback and print the XenStore",
        description="Run the full XenStore handshake of a blkfront/blkback pair (queues, ring "
        "pages, grants, event channels, features) for the given module parameters and print "
        "the resulting store like xenstore-ls, then a summary. A refused handshake still "
        "prints the store, with its error node, and exits 1.",
        epilog="Example: xbq negotiate --vcpus 8 --max-queues 8 --max-ring-page-order 2",
    )
    g = p.add_argument_group("guest and blkfront")
    g.add_argument("--vcpus", type=positive_int, default=16, metavar="N",
                   help="online vCPUs of the guest; caps --max-queues (default 16)")
    g.add_argument("--max-queues", type=nonnegative_int, default=4, metavar="N",
                   help="blkfront's max_queues module parameter (default 4)")
    g.add_argument("--max-ring-page-order", type=nonnegative_int, default=0, metavar="K",
                   help="blkfront's max_ring_page_order (default 0: one-page rings; max 4)")
    g.add_argument("--no-persistent", action="store_true",
                   help="blkfront does not offer persistent grants")
    b = p.add_argument_group("dom0 and blkback")
    b.add_argument("--dom0-vcpus", type=positive_int, default=16, metavar="N",
                   help="online vCPUs of dom0 (default 16)")
    b.add_argument("--backend-max-queues", type=nonnegative_int, default=None, metavar="N",
                   help="blkback's max_queues (default: dom0's vCPUs)")
    b.add_argument("--backend-max-ring-page-order", type=nonnegative_int, default=4,
                   metavar="K", help="blkback's max_ring_page_order (default 4)")
    b.add_argument("--backend-no-persistent", action="store_true",
                   help="blkback does not offer persistent grants")
    b.add_argument("--backend-max-indirect-segments", type=nonnegative_int, default=256,
                   metavar="N", help="feature-max-indirect-segments blkback advertises (256)")
    b.add_argument("--old-backend", action="store_true",
                   help="a blkback from before multi-queue (no multi-queue-max-queues)")
    b.add_argument("--sectors", type=positive_int, default=2**21, metavar="N",
                   help="device size in 512-byte sectors (default 2097152 = 1 GiB)")
    b.add_argument("--sector-size", type=positive_int, default=512, metavar="BYTES",
                   help="logical block size (default 512)")
    b.add_argument("--readonly", action="store_true", help="attach the disk read-only")
    m = p.add_argument_group("a misbehaving frontend")
    m.add_argument("--num-queues", type=_bounded(MAX_FORCED_QUEUES), default=None, metavar="N",
                   help="write this multi-queue-num-queues whatever was negotiated")
    m.add_argument("--ring-page-order", type=_bounded(MAX_FORCED_RING_ORDER), default=None,
                   metavar="K",
                   help="use this ring-page-order whatever was negotiated (0..8)")
    m.add_argument("--omit", action="append", default=[], metavar="KEY",
                   help="do not write KEY (e.g. event-channel, queue-1/ring-ref); repeatable")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (connected, rings, states, error, features, "
                        "store) instead of the tree")
    p.set_defaults(func=run)


def summary(conn) -> str:
    """Return the human-readable summary printed under the tree."""
    walk = {"front": [], "back": []}
    for side, state in conn.transitions:
        walk[side].append(state.name)
    lines = [
        f"frontend {conn.frontend_path}: {conn.front_state.name} "
        f"({' -> '.join(walk['front'])})",
        f"backend  {conn.backend_path}: {conn.back_state.name} ({' -> '.join(walk['back'])})",
    ]
    if conn.connected:
        pages = 1 << conn.ring_page_order
        f = conn.features
        yes = {True: "yes", False: "no"}
        lines += [
            f"rings: {conn.nr_rings} x {pages} page{'s' if pages > 1 else ''} "
            f"(ring-page-order {conn.ring_page_order}, {conn.nr_ents} slots each)",
            f"features: persistent grants {yes[f['feature_persistent']]}, indirect segments "
            f"{f['max_indirect_segments'] or 'off'}, flush-cache "
            f"{yes[f['feature_flush_cache']]}, barrier {yes[f['feature_barrier']]}, "
            f"discard {yes[f['feature_discard']]}",
            f"device: {conn.sectors} sectors of 512 bytes, sector-size {conn.sector_size}, "
            f"info {conn.info}",
        ]
    else:
        lines.append(f"not connected: {conn.error}")
    return "\n".join(lines)


def to_json(conn) -> dict:
    """The ``--json`` object."""
    return {
        "connected": conn.connected, "nr_rings": conn.nr_rings,
        "ring_page_order": conn.ring_page_order, "nr_ents": conn.nr_ents,
        "front_state": conn.front_state.name, "back_state": conn.back_state.name,
        "error": conn.error, "features": conn.features,
        "store": dict(conn.store.items()),
    }


def run(args: argparse.Namespace) -> int:
    from xbq.blkif.negotiate import negotiate
    from xbq.errors import NegotiationError

    conn = negotiate(
        vcpus=args.vcpus, max_queues=args.max_queues, dom0_vcpus=args.dom0_vcpus,
        backend_max_queues=args.backend_max_queues,
        max_ring_page_order=args.max_ring_page_order,
        backend_max_ring_page_order=args.backend_max_ring_page_order,
        feature_persistent=not args.no_persistent,
        backend_feature_persistent=not args.backend_no_persistent,
        backend_max_indirect_segments=args.backend_max_indirect_segments,
        old_backend=args.old_backend, sectors=args.sectors, sector_size=args.sector_size,
        readonly=args.readonly, frontend_num_queues=args.num_queues,
        frontend_ring_page_order=args.ring_page_order, omit_keys=tuple(args.omit))
    if args.json:
        print(json.dumps(to_json(conn), indent=1))
    else:
        print(conn.store.format_tree("/"))
        print()
        print(summary(conn))
    if not conn.connected:
        raise NegotiationError(f"handshake refused: {conn.error}")
    return 0
