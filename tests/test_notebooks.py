"""The study as published: ``xbq reproduce --quick`` executes every chapter (papermill, its
``parameters`` cell set), renders it to HTML and writes ``index.html``; no error output, no
missing image, steps reused when nothing changed; the notebooks stay paired."""

import html
import json
import re
from pathlib import Path

import nbformat
import pytest

from xbq.errors import XbqError
from xbq.study.chapters import (
    CHAPTERS,
    NOTEBOOKS_DIR,
    error_outputs,
    execute,
    missing_images,
    parameters_of,
)
from xbq.study.reproduce import STEPS, load_state, reproduce

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.py"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    lines = []
    failed = reproduce(out, quick=True, progress=False, echo=lines.append)
    return out, failed, lines


@pytest.mark.notebook
def test_every_step_and_chapter_runs(study):
    out, failed, _ = study
    assert failed == [], [(f, (out / f"{f}.error.txt").read_text()[-2000:]) for f in failed]
    state = load_state(out)
    assert list(state) == list(STEPS) and all(s["status"] == "ok" for s in state.values())
    for name in CHAPTERS:
        nb = out / "chapters" / f"{name}.ipynb"
        assert error_outputs(nb) == []
        executed = nbformat.read(nb, as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", [])
                   for c in executed.cells), f"{name}: papermill injected no parameters"
        page = out / "chapters" / f"{name}.html"
        assert page.stat().st_size > 10_000 and missing_images(page) == []
        text = page.read_text()
        assert "Traceback" not in text
        # a chapter, not a notebook: its title, a way back, no code cells
        assert f"<title>{html.escape(CHAPTERS[name])}</title>" in text
        assert 'href="../index.html"' in text and "hl-ipython3" not in text


@pytest.mark.notebook
def test_index_has_the_study_and_its_provenance(study):
    out, _, _ = study
    page = out / "index.html"
    text = page.read_text()
    assert missing_images(page) == []
    imgs = re.findall(r'<img src="([^"]+)"', text)
    assert len(imgs) >= 8 and all((out / i).is_file() for i in imgs)
    assert text.count("Regenerate: <code>xbq reproduce") == len(imgs)
    for needle in ("published multi_ring", "twin error multi_ring", "Table 2. The native "
                   "engine on this machine", "sq mean (min-max)", "<b>Answer.</b>",
                   "https://lkml.org/lkml/2015/2/15/46",
                   "peaks at 372k IOPS at 8 jobs", "numba", "scipy", "Commit", "memory",
                   "What-ifs", "Fitting your own data", 'href="chapters/whatif.html"',
                   'href="chapters/trust.html"'):
        assert needle in text, needle
    assert "Step(s) failed" not in text


@pytest.mark.notebook
def test_unchanged_steps_are_reused_and_force_reruns(study):
    out, _, _ = study
    lines = []
    assert reproduce(out, quick=True, progress=False, echo=lines.append,
                     steps=["seed", "twin_time"]) == []
    assert any(ln.startswith("[seed] reused") for ln in lines)
    assert any(ln.startswith("[twin_time] reused") for ln in lines)
    assert any(ln.startswith("[report] ok") for ln in lines)  # the page is always rewritten
    lines.clear()
    assert reproduce(out, quick=True, progress=False, echo=lines.append, steps=["seed"],
                     force=True) == []
    assert any(ln.startswith("[seed] ok") for ln in lines)
    (out / "seed.csv").unlink()  # an output gone: the step runs again
    lines.clear()
    reproduce(out, quick=True, progress=False, echo=lines.append, steps=["seed"])
    assert any(ln.startswith("[seed] ok") for ln in lines)


def _notebook(tmp_path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = nbformat.v4.new_code_cell("quick = False\nout_dir = 'out'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, tmp_path / "bad.ipynb")
    return tmp_path


@pytest.mark.notebook
def test_a_failing_cell_fails_its_chapter_in_one_line(tmp_path):
    nbdir = _notebook(tmp_path, ["x = 1", "raise ValueError('the data is wrong')"])
    # cell 4 of the executed notebook: papermill adds the injected-parameters cell
    with pytest.raises(XbqError, match=r"chapter bad: cell 4 raised ValueError: the data is "
                                       r"wrong") as err:
        execute("bad", tmp_path / "out", {"quick": True}, notebooks_dir=nbdir)
    assert "\n" not in str(err.value)
    with pytest.raises(XbqError, match="no parameter.*nope"):
        execute("bad", tmp_path / "out", {"nope": 1}, notebooks_dir=nbdir)


def test_every_chapter_has_a_parameters_cell_with_quick_and_out_dir():
    for name in CHAPTERS:
        params = parameters_of(NOTEBOOKS_DIR / f"{name}.ipynb")
        assert {"quick", "out_dir"} <= set(params), name
    assert {p.stem for p in NOTEBOOKS} == set(CHAPTERS)


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


def test_notebooks_hold_no_model_logic():
    """What a chapter computes lives in xbq (tested there): no function or class definitions
    and no simulate-and-compare code in the notebooks."""
    for script in NOTEBOOKS:
        text = script.read_text()
        assert not re.search(r"^\s*(def|class) ", text, flags=re.M), script.name
        assert "rel_error\"] =" not in text and ".merge(" not in text, script.name


def test_the_repository_notebooks_dir_is_the_one_executed():
    assert NOTEBOOKS_DIR == Path(__file__).resolve().parents[1] / "notebooks"
