"""One file a reader can keep or deposit: the published study and what reruns it.

:func:`write_archive` packs, into one ``.tar.gz`` that unpacks into one folder (the file's
name):

``site/``
    ``index.html`` and every chapter's HTML with their images embedded (``data:`` URIs):
    each page opens alone, offline.
``data/``
    The data, parameter files and predictions the study read (the project's ``data/``).
``source/``
    The project at the commit that made the site (tracked files only, as ``git archive``
    writes them; the working tree's copy when the tree is not a git checkout).
``environment/``
    ``requirements.lock`` (every installed package at its exact version, ``pip install -r``
    takes it) and ``environment.yml`` (the same pins for ``conda env create -f``), plus the
    Python version.
``PROVENANCE.json``
    The commit, whether the tree had uncommitted changes, the date, the machine, the
    reproduction's command and its steps' summaries.
``rerun.sh`` and ``README.md``
    The one command that reruns it: ``sh rerun.sh`` makes a virtual environment from the
    lock, installs ``source/`` into it and runs ``xbq reproduce`` as the archive's site was
    made, into ``rerun/``.
"""

from __future__ import annotations

import base64
import io
import json
import mimetypes
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from xbq.errors import XbqError
from xbq.study.paths import REPO_DIR, data_dir, git_commit

#: ``<img src="...">`` references to embed (relative paths only).
_IMG = re.compile(r'(<img\b[^>]*?\bsrc=)(["\'])(?!data:|https?:|//)([^"\']+)\2', re.I)


def embed_images(html: str, base: Path) -> tuple[str, list[str]]:
    """``html`` with every relative ``<img src>`` under ``base`` replaced by a ``data:`` URI;
    returns the page and the sources that could not be found (left as they were)."""
    missing = []

    def inline(m):
        path = (base / m.group(3)).resolve()
        if not path.is_file():
            missing.append(m.group(3))
            return m.group(0)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = base64.b64encode(path.read_bytes()).decode()
        return f"{m.group(1)}{m.group(2)}data:{kind};base64,{data}{m.group(2)}"

    return _IMG.sub(inline, html), missing


def _pip_freeze() -> str:
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise XbqError(f"pip freeze failed: {out.stderr.strip().splitlines()[-1:]}")
    return "".join(line + "\n" for line in out.stdout.splitlines()
                   if line and not line.startswith(("-e ", "xbq")))


def _conda_env(lock: str) -> str:
    py = ".".join(platform.python_version_tuple()[:2])
    pins = "".join(f"      - {line}\n" for line in lock.splitlines() if line.strip())
    return (f"name: xbq-rerun\nchannels:\n  - conda-forge\ndependencies:\n  - python={py}\n"
            f"  - pip\n  - pip:\n{pins}")


def _source_tar(commit: str | None) -> bytes | None:
    """``git archive`` of ``commit`` (None when the project is not a git checkout)."""
    if not commit or not (REPO_DIR / ".git").exists():
        return None
    out = subprocess.run(["git", "-C", str(REPO_DIR), "archive", "--format=tar",
                          "--prefix=source/", commit], capture_output=True, check=False)
    return out.stdout if out.returncode == 0 else None


RERUN = """#!/bin/sh
# Rerun the study this archive holds (xbq {version}, commit {commit}): a virtual environment
# from environment/requirements.lock, source/ installed into it, then `xbq reproduce` as the
# site was made, into rerun/. Set XBQ_RERUN_PYTHON to use an existing Python instead of
# making the environment (it must have the packages of the lock).
set -e
cd "$(dirname "$0")"
if [ -n "$XBQ_RERUN_PYTHON" ]; then
  PY="$XBQ_RERUN_PYTHON"
else
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet -r environment/requirements.lock
  .venv/bin/python -m pip install --quiet --no-deps -e source
  PY="$PWD/.venv/bin/python"
fi
cd source
PYTHONHASHSEED=0 NUMBA_CACHE_DIR="$PWD/../.numba_cache" "$PY" -m xbq reproduce --out ../rerun {args}
"""

README = """# xbq study archive

Made {date} from commit {commit}{dirty} of xbq {version} with `{command}`.

- `site/index.html`: the published study, every page self-contained (images embedded).
- `data/`: the data, parameter files and predictions it read.
- `source/`: the project at that commit.
- `environment/requirements.lock` (pip) and `environment/environment.yml` (conda): every
  package at the version that made the site; Python {python}.
- `PROVENANCE.json`: commit, date, machine, each step's summary.

Rerun it, into `rerun/`:

    sh rerun.sh

The twin's and the fits' numbers (`rerun/twin.csv`, `rerun/models.csv`) then equal those of
`site/` (`site/twin.csv`, `site/models.csv`); native measurements are of the machine you run
on.
"""


def archive_folder(path) -> str:
    """The one folder an archive unpacks into: its file name without ``.tar.gz``."""
    name = Path(path).name
    for ext in (".tar.gz", ".tgz"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def check_target(path) -> Path:
    """``path`` as an archive to write: refused if it exists or its folder does not."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise XbqError(f"{path} exists: the archive is never written over a file")
    if not path.parent.is_dir():
        raise XbqError(f"directory {path.parent} does not exist")
    if not path.name.endswith((".tar.gz", ".tgz")):
        raise XbqError(f"{path}: the archive is a .tar.gz")
    return path


def write_archive(out, path, *, quick: bool = False, steps=None, own=(),
                  own_vcpus: int | None = None, own_queues: int | None = None) -> dict:
    """Pack the reproduction in ``out`` (``xbq reproduce --out out``) into ``path``.

    Parameters
    ----------
    out : path
        A finished reproduction's directory (``index.html`` in it).
    path : path
        The archive to write (``.tar.gz``); an existing file is refused.
    quick, steps, own, own_vcpus, own_queues :
        How the reproduction was run (the rerun command repeats them; ``own``'s files are
        packed under ``own/``).

    Returns
    -------
    dict
        ``path``, ``bytes``, ``members`` (count), ``folder`` (what it unpacks into) and
        the rerun ``command``.
    """
    from xbq import __version__
    from xbq.study.reproduce import load_state

    out, path = Path(out), Path(path)
    if not (out / "index.html").is_file():
        raise XbqError(f"{out}/index.html not found: run xbq reproduce --out {out} first")
    check_target(path)
    stamp = git_commit()  # "abc1234" or "abc1234-dirty"
    commit = stamp.removesuffix("-dirty") if stamp else None
    dirty = stamp.endswith("-dirty") if stamp else None
    own = [Path(p) for p in own]
    args = " ".join((["--quick"] if quick else [])
                    + ([f"--steps {','.join(steps)}"] if steps else [])
                    + ([f"--own {' '.join(f'../own/{p.name}' for p in own)}"] if own else [])
                    + ([f"--own-vcpus {own_vcpus}"] if own and own_vcpus else [])
                    + ([f"--own-queues {own_queues}"] if own and own_queues else []))
    lock = _pip_freeze()
    state = load_state(out)
    prov = {"commit": commit, "uncommitted_changes": dirty, "version": __version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "python": platform.python_version(), "machine": platform.platform(),
            "command": f"xbq reproduce --out {out.name} {args}".strip(),
            "rerun": "sh rerun.sh",
            "steps": {k: {f: v.get(f) for f in ("status", "summary", "seconds")}
                      for k, v in state.items() if isinstance(v, dict)}}
    members = 0

    top = archive_folder(path)

    def add_bytes(tar, name, data: bytes, mode=0o644):
        nonlocal members
        info = tarfile.TarInfo(f"{top}/{name}")
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        tar.addfile(info, io.BytesIO(data))
        members += 1

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    tmp = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for page in [out / "index.html", *sorted((out / "chapters").glob("*.html"))]:
                html, _ = embed_images(page.read_text(errors="replace"), page.parent)
                add_bytes(tar, f"site/{page.relative_to(out)}", html.encode())
            for f in sorted(out.glob("*.csv")) + sorted(out.glob("*.json")) + \
                    sorted(out.glob("*.md")) + sorted(out.glob("*.txt")):
                add_bytes(tar, f"site/{f.name}", f.read_bytes())
            data = data_dir()
            for f in sorted(data.rglob("*")):
                if f.is_file() and not f.name.endswith(".lock"):
                    add_bytes(tar, f"data/{f.relative_to(data)}", f.read_bytes())
            for f in own:
                add_bytes(tar, f"own/{f.name}", f.read_bytes())
            src = _source_tar(commit)
            if src is not None:
                with tarfile.open(fileobj=io.BytesIO(src)) as s:
                    for m in s.getmembers():
                        if m.isfile():
                            add_bytes(tar, m.name, s.extractfile(m).read(), m.mode & 0o755)
            else:  # not a checkout: the package and what it needs to install
                for f in sorted(REPO_DIR.rglob("*")):
                    rel = f.relative_to(REPO_DIR)
                    if f.is_file() and rel.parts[0] in ("xbq", "notebooks", "data") \
                            and "__pycache__" not in rel.parts:
                        add_bytes(tar, f"source/{rel}", f.read_bytes())
                for name in ("pyproject.toml", "README.md", "Makefile", "CITATION.cff"):
                    if (REPO_DIR / name).is_file():
                        add_bytes(tar, f"source/{name}", (REPO_DIR / name).read_bytes())
            add_bytes(tar, "environment/requirements.lock", lock.encode())
            add_bytes(tar, "environment/environment.yml", _conda_env(lock).encode())
            add_bytes(tar, "environment/python-version", (platform.python_version() + "\n")
                      .encode())
            add_bytes(tar, "PROVENANCE.json", (json.dumps(prov, indent=2) + "\n").encode())
            add_bytes(tar, "rerun.sh", RERUN.format(version=__version__, commit=commit,
                                                    args=args).encode(), 0o755)
            add_bytes(tar, "README.md", README.format(
                date=prov["date"], commit=commit, dirty=" (with uncommitted changes)"
                if dirty else "", version=__version__, command=prov["command"],
                python=prov["python"]).encode())
        os.link(tmp, path)  # never over a file made meanwhile (FileExistsError)
    except FileExistsError:
        raise XbqError(f"{path} appeared while the archive was written: kept, not "
                       "replaced") from None
    except (OSError, ValueError, tarfile.TarError) as exc:
        raise XbqError(f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(path), "bytes": path.stat().st_size, "members": members,
            "folder": top, "command": f"sh {top}/rerun.sh"}
