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


def test_lower_layers_never_import_upper_ones():
    """Protocol modules must not import engines, models, the CLI or plotting."""
    layers = [
        {"abi", "atomic", "errors", "ring", "_jit", "paths", "datasets"},
        {"grant", "evtchn", "xenstore", "xenbus", "vbd"},
        {"blkfront", "blkback"},
        {"rng", "workload", "hist", "results", "loopback", "locks", "native", "des"},
        {"models", "fit"},
        {"plots", "cli", "experiments"},
    ]
    level = {name: i for i, names in enumerate(layers) for name in names}
    pkg = ROOT / "xbq"
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(pkg).with_suffix("").parts
        mine = level.get(rel[0])
        if mine is None:
            continue
        for m in re.finditer(r"^\s*(?:from|import) xbq\.(\w+)", path.read_text(), flags=re.M):
            theirs = level.get(m.group(1))
            assert theirs is None or theirs <= mine, \
                f"{path.relative_to(ROOT)} (layer {mine}) imports xbq.{m.group(1)} ({theirs})"


def test_results_name_the_commit_and_whether_it_was_dirty():
    import subprocess

    from xbq.paths import git_commit
    from xbq.results import machine_info

    head = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], capture_output=True,
                          text=True, cwd=ROOT)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, cwd=ROOT).stdout.strip() != ""
    expect = head.stdout.strip() + ("-dirty" if dirty else "")
    assert git_commit() == expect
    assert machine_info()["git_commit"] == expect
