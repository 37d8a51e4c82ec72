"""Shared test settings: hypothesis profiles (seeded, deterministic) and small fixtures."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", derandomize=True, deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "thorough", derandomize=False, deadline=None, max_examples=600,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("XBQ_HYPOTHESIS_PROFILE", "default"))


# --- the command line, run in this process ----------------------------------------------------

#: Commands with subcommands of their own (``xbq fio import``).
NESTED = ("fio",)


class CliResult:
    """What one ``xbq`` command did: its exit status, stdout and stderr."""

    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    def one_line_error(self, needle: str = "", prog: str | None = None) -> str:
        """Assert the command failed as bad input must: a non-zero exit (1, or argparse's 2),
        exactly one line on stderr starting ``xbq PROG: error:`` (PROG: the command, ``""``
        for the top-level parser), no traceback, no "internal error", and ``needle`` in it;
        return the line."""
        nested = len(self.argv) > 1 and self.argv[0] in NESTED
        if prog is None:
            prog = " ".join(self.argv[:2] if nested else self.argv[:1])
        err = self.err
        assert self.rc in (1, 2), (self.argv, self.rc, err)
        assert err.count("\n") == 1 and err.startswith(f"xbq {prog}".rstrip() + ":"), err
        assert ": error:" in err and "internal error" not in err, err
        assert "Traceback" not in err and needle in err, (needle, err)
        return err.strip()


@pytest.fixture
def cli(capsys):
    """Run ``xbq ARGV...`` in this process: ``cli("fit", "t.csv").one_line_error("...")``."""
    from xbq.cli import main

    def run(*argv) -> CliResult:
        argv = [str(a) for a in argv]
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's errors leave through SystemExit
            rc = exc.code
        got = capsys.readouterr()
        return CliResult(argv, rc, got.out, got.err)

    return run
