"""The ``xbq`` command line.

Each subcommand lives in its own module ``xbq.cli.<name>`` with two functions:
``register(subparsers)`` adds its parser (and sets ``func``), and the function it sets runs
it. Heavy imports (numba kernels, scipy) happen inside the command, so ``xbq --help`` is
instant. Bad input surfaces as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from xbq import __version__
from xbq.errors import XbqError

#: The order ``--help`` lists subcommands in; any other module of this package that has a
#: ``register`` function is listed after these, alphabetically.
ORDER = ("reproduce", "seed", "negotiate", "ring", "measure", "simulate", "sweep", "calibrate",
         "fit", "fio", "fuzz", "schema")

EXIT_USAGE = 2
EXIT_ERROR = 1


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``xbq negotiate: error: ...``."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    """Return the top-level parser with every subcommand registered."""
    parser = Parser(
        prog="xbq",
        description=(
            "Study why one blkif ring behind one lock stops scaling and how far per-queue "
            "rings take you: run the Xen PV block protocol, measure it, simulate it, fit "
            "queueing models to it."
        ),
        epilog="Run 'xbq COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"xbq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in commands():
        importlib.import_module(f"xbq.cli.{name}").register(sub)
    return parser


def commands() -> list[str]:
    """Names of the subcommand modules in this package, in ``--help`` order."""
    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    ordered = [name for name in ORDER if name in found]
    return ordered + sorted(found - set(ordered))


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 0")
    return value


def int_list(text: str) -> list[int]:
    """argparse type: a comma-separated list of distinct positive integers, e.g. ``1,4,8``."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must list integers >= 1")
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{text!r} lists {twice[0]} more than once")
    return values


def add_store_flags(p: argparse.ArgumentParser, *, store: bool = True) -> None:
    """``--resume`` (default) / ``--overwrite`` / ``--no-resume`` for a command with ``--out``:
    what to do when the output file already exists (sets ``args.existing``); with ``store``,
    also ``--mixed`` (several configurations in one store) and ``--wait`` (for another
    writer of the same file)."""
    if store:
        p.add_argument("--mixed", action="store_true",
                       help="let --out hold points of several configurations (each row "
                       "carries its own); without it a point whose settings differ from "
                       "the store's is refused")
        p.add_argument("--wait", action="store_true",
                       help="if another process is writing --out, wait for it to finish "
                       "(then skip what it stored) instead of stopping with an error")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", dest="existing", action="store_const", const="resume",
                   help="if --out exists, keep its points and skip them (default)")
    g.add_argument("--overwrite", dest="existing", action="store_const", const="overwrite",
                   help="if --out exists, replace it")
    g.add_argument("--no-resume", dest="existing", action="store_const", const="refuse",
                   help="if --out exists, stop with an error")
    p.set_defaults(existing="resume")


def add_output_format(p: argparse.ArgumentParser) -> None:
    """``--output-format {text,json,fio-json}`` (and ``--json``, the same as ``json``) for a
    command that prints rows; sets ``args.output_format``."""
    p.add_argument("--output-format", choices=("text", "json", "fio-json"), default="text",
                   help="text (default), json (an array of row objects) or fio-json (fio's "
                   "--output-format=json shape, one job section per point)")
    p.add_argument("--json", dest="output_format", action="store_const", const="json",
                   help="the same as --output-format json")


def finite_float(text: str) -> float:
    """argparse type: a finite number (``inf`` and ``nan`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be finite")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the ``xbq`` command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    prog = getattr(args, "prog", None) or f"xbq {args.command}"  # a nested command sets it
    try:
        return int(args.func(args) or 0)
    except XbqError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug in xbq: still one line unless asked for the traceback
        if os.environ.get("XBQ_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} "
              "(set XBQ_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


#: How a result column reads in a text table: its header and its format.
TEXT_COLUMNS = {
    "mode": ("mode", "{}"), "jobs": ("jobs", "{:d}"), "queues": ("rings", "{:d}"),
    "iops": ("IOPS", "{:,.0f}"), "lat_mean_us": ("mean us", "{:,.1f}"),
    "lat_p50_us": ("p50 us", "{:,.1f}"), "lat_p99_us": ("p99 us", "{:,.1f}"),
    "util_vcpu_busy": ("vCPU busy", "{:.1%}"), "util_vcpu_spin": ("vCPU spin", "{:.1%}"),
    "util_dom0_busy": ("dom0 busy", "{:.1%}"), "util_device": ("device", "{:.2f}"),
    "notify_fe_per_req": ("fe notify/req", "{:.3f}"),
    "notify_be_per_req": ("be notify/rsp", "{:.3f}"), "batch_mean": ("batch", "{:.1f}"),
}


def text_table(frame, cols) -> str:
    """``frame``'s ``cols`` as a person reads them: IOPS with thousands separators, shares as
    percentages, the headers of :data:`TEXT_COLUMNS`, right-aligned, one line a row (no
    scientific notation; kept under 160 columns for the default columns)."""
    heads = [TEXT_COLUMNS.get(c, (c, "{}"))[0] for c in cols]
    rows = []
    for rec in frame[cols].itertuples(index=False):
        cells = []
        for c, v in zip(cols, rec, strict=True):
            fmt = TEXT_COLUMNS.get(c, (c, "{}"))[1]
            try:
                cells.append(fmt.format(int(v) if fmt == "{:d}" else v))
            except (TypeError, ValueError):
                cells.append(str(v))
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
