"""Every notebook runs top to bottom (as its paired percent-format script) and stays paired."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


@pytest.mark.notebook
@pytest.mark.parametrize("script", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(script, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("script", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_paired(script):
    ipynb = script.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{ipynb.name} missing: run jupytext --sync {script.name}"
    nb = json.loads(ipynb.read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    text = script.read_text()
    assert all(c.strip().splitlines()[0] in text for c in code if c.strip())
    assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), \
        "commit notebooks without outputs"
