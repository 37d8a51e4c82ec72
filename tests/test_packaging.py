"""The kit's own files agree with each other: dependencies, README commands, CI entry."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    conda = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        m = re.match(r"\s+- ([A-Za-z0-9_.-]+)", line)
        if m and m.group(1) not in ("python", "pip") and not line.strip().startswith("- -e"):
            conda.add(_name(m.group(1)))
    assert conda == wanted, f"only in environment.yml: {conda - wanted}; " \
                            f"only in pyproject: {wanted - conda}"


def test_required_packages_declared():
    deps = {_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())
            ["project"]["dependencies"]}
    assert {"jupyterlab", "numba", "scipy", "seaborn", "numpy", "pandas"} <= deps


def test_readme_shows_exactly_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", readme, flags=re.S)
    setup = [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip().startswith("make")]
    assert setup == ["make reproduce", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^reproduce:", makefile, flags=re.M)
    assert re.search(r"^test:", makefile, flags=re.M)


def test_top_level_layout():
    for name in ("notebooks", "xbq", "data", "tests", "environment.yml", "README.md",
                 "pyproject.toml", "Makefile", ".ci/run"):
        assert (ROOT / name).exists(), name
    assert (ROOT / "data" / "seed" / "xen-blkmq-rfc-2015.csv").is_file()


#: The package, bottom up: a module may import only from its own rank or below, and from
#: its own rank only within its own package (the two drivers never import each other except
#: through the handshake and the loopback above them; the two engines never do).
LAYERS = [
    ["errors"],
    ["_jit", "checks", "files", "progress"],
    ["xen.abi"],
    ["xen.memory", "xen.atomic", "workload.rng", "workload.hist"],
    ["xen.ring", "xen.grant", "xen.evtchn", "xen.xenstore", "workload.fio",
     "workload.placement"],
    ["xen.xenbus", "blkif.vbd"],
    ["blkif.blkfront", "blkif.blkback"],
    ["blkif.blk_mq", "blkif.blkfront_xenbus", "blkif.blkback_xenbus"],
    ["blkif.negotiate"],
    ["blkif.loopback", "blkif.fuzz", "blkif.pair", "engines.schema"],
    ["engines.native", "engines.des"],
    ["models"],
    ["fit"],
    ["study"],
    ["sweep"],
    ["cli"],
]


def _rank(dotted: str) -> tuple[int, str] | None:
    """(rank, unit) of ``xbq.<dotted>`` by the longest prefix listed in :data:`LAYERS`."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        unit = ".".join(parts[:n])
        for rank, names in enumerate(LAYERS):
            if unit in names:
                return rank, unit
    return None


def test_every_package_directory_is_a_regular_package():
    """setuptools' ``packages.find`` skips a directory without ``__init__.py``: a
    non-editable install would lack it."""
    pkg = ROOT / "xbq"
    missing = [str(d.relative_to(ROOT)) for d in [pkg, *pkg.rglob("*")] if d.is_dir()
               and d.name != "__pycache__" and any(d.glob("*.py"))
               and not (d / "__init__.py").is_file()]
    assert not missing, f"directories without __init__.py: {missing}"


def test_every_module_has_a_layer():
    pkg = ROOT / "xbq"
    loose = [str(p.relative_to(ROOT)) for p in pkg.rglob("*.py")
             if p.name not in ("__init__.py", "__main__.py")
             and _rank(".".join(p.relative_to(pkg).with_suffix("").parts)) is None]
    assert not loose, f"modules missing from LAYERS: {loose}"


def test_lower_layers_never_import_upper_ones():
    pkg = ROOT / "xbq"
    bad = []
    for path in pkg.rglob("*.py"):
        parts = path.relative_to(pkg).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        me = _rank(".".join(parts)) if parts else None
        if me is None:
            continue
        for m in re.finditer(r"^\s*(?:from|import) xbq\.([\w.]+)", path.read_text(),
                             flags=re.M):
            them = _rank(m.group(1))
            if them is None or them[1] == me[1]:
                continue
            if them[0] >= me[0]:
                bad.append(f"{path.relative_to(ROOT)} ({me[1]}, rank {me[0]}) imports "
                           f"xbq.{m.group(1)} ({them[1]}, rank {them[0]})")
    assert not bad, "\n".join(bad)


def test_results_name_the_commit_and_whether_it_was_dirty():
    import subprocess

    from xbq.study.paths import git_commit
    from xbq.study.results import machine_info

    head = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], capture_output=True,
                          text=True, cwd=ROOT)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=ROOT).stdout.strip() != ""
    expect = head.stdout.strip() + ("-dirty" if dirty else "")
    assert git_commit() == expect
    assert machine_info()["git_commit"] == expect


def test_citation_file_names_the_kit_at_its_version():
    import yaml

    root = Path(__file__).resolve().parents[1]
    cff = yaml.safe_load((root / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "version", "license"} <= set(cff)
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert cff["version"] == project["version"] and cff["license"] == project["license"]
