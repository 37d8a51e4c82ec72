"""Where xbq finds its data: built from the package location, never from the working directory."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # xbq/
REPO_DIR = PACKAGE_DIR.parent


def data_dir() -> Path:
    """Return the project's ``data/`` folder (``$XBQ_DATA_DIR`` overrides it)."""
    return Path(os.environ.get("XBQ_DATA_DIR", REPO_DIR / "data"))


#: The committed calibration of the twin the study uses: only the costs the 2015 table
#: determines fitted, on common random numbers over three seeds (``python -m
#: xbq.study.trust``; data/calibrated/README.md). ``des-params.json`` beside it is the
#: eleven-cost calibration it replaced, kept for the comparison.
CALIBRATION = "des-params-determined.json"


def calibration_file() -> Path:
    """Return the path of the committed calibration of the twin (:data:`CALIBRATION`)."""
    return data_dir() / "calibrated" / CALIBRATION


def seed_csv() -> Path:
    """Return the path of the published 2015 seed table."""
    return data_dir() / "seed" / "xen-blkmq-rfc-2015.csv"


def git_commit() -> str | None:
    """The checkout's short commit, with ``-dirty`` if it has uncommitted changes (or None).

    Recorded with every measurement and calibration, so that a result names the code that
    produced it, and says when that code was not a commit. Only a git work tree whose top
    is this project's folder counts: a copy of the project without its ``.git`` that sits
    inside another repository has no commit (not that repository's).
    """
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}

    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=REPO_DIR, timeout=5, env=env)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != REPO_DIR.resolve():
            return None
        out = git("describe", "--always", "--dirty", "--abbrev=7")
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def provenance(command: str) -> dict:
    """Command, commit (:func:`git_commit`) and UTC date of a result, for its JSON and
    README."""
    from datetime import UTC, datetime

    return {"command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": git_commit()}
