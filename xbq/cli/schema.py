"""``xbq schema``: the JSON Schema of a file xbq reads (for editors and docs)."""

from __future__ import annotations

import argparse

#: What each schema describes, by name.
KINDS = {"params": "a parameter file of the twin (xbq simulate --params, sweep params)",
         "sweep": "a sweep file (xbq sweep)",
         "fio": "the fio JSON results xbq fio import reads"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of a parameter file, a sweep file or fio's JSON",
        description="Print the JSON Schema that xbq checks a file against before it runs "
        "anything (the same typed models): give it to an editor for completion and "
        "checking as you type. The schemas are also in docs/schemas/.",
        epilog="Example: xbq schema sweep > sweep.schema.json")
    p.add_argument("kind", choices=sorted(KINDS),
                   help="; ".join(f"{k}: {v}" for k, v in KINDS.items()))
    p.set_defaults(func=run)


def schema(kind: str) -> dict:
    """The JSON Schema of ``kind`` (one of :data:`KINDS`)."""
    if kind == "params":
        from xbq.engines.des.params import json_schema
    elif kind == "sweep":
        from xbq.sweep.spec import json_schema
    else:
        from xbq.study.fio_schema import json_schema
    return json_schema()


def run(args: argparse.Namespace) -> int:
    import json

    print(json.dumps(schema(args.kind), indent=2, sort_keys=True))
    return 0
