"""The study's chapters: the notebooks of ``notebooks/``, executed with papermill and rendered
to HTML with nbconvert.

Each notebook has a cell tagged ``parameters`` (``quick``, ``out_dir`` and its own: data
paths, durations, seeds); :func:`execute` runs it with the values given, in a fresh kernel of
this Python, and fails with the failing cell's number and error in one line, so a report is
never silently partial. :func:`error_outputs` lists the error outputs of an executed
notebook and :func:`missing_images` the images an HTML page references but that do not exist.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from xbq.errors import XbqError
from xbq.study.paths import REPO_DIR

NOTEBOOKS_DIR = REPO_DIR / "notebooks"
#: The chapters, in reading order: notebook name -> title.
CHAPTERS = {
    "protocol_tour": "A tour of the blkif protocol",
    "fit_models": "The seed table and the queueing models",
    "engines": "The engines: native threads and the discrete-event twin",
    "twin_time": "Where the time goes in the twin",
    "whatif": "What-ifs in the twin",
    "trust": "Does the twin earn trust?",
    "own_data": "Fitting your own data (from fio JSON)",
}


def parameters_of(path) -> dict:
    """The names and default source of a notebook's ``parameters`` cell (``{}`` if none)."""
    nb = json.loads(Path(path).read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"])
            return dict(re.findall(r"^(\w+)\s*=\s*(.+?)\s*(?:#.*)?$", src, flags=re.M))
    return {}


def execute(name: str, out_dir, parameters: dict, *, notebooks_dir=None,
            progress: bool = False, timeout_s: int = 1800) -> Path:
    """Execute chapter ``name`` into ``out_dir/chapters/<name>.ipynb``; return that path.

    Parameters
    ----------
    name : str
        A notebook of ``notebooks_dir`` (default ``notebooks/``), without ``.ipynb``.
    out_dir : path
        The study's output directory; the kernel runs there.
    parameters : dict
        Values for the notebook's ``parameters`` cell (names it lacks are refused).
    progress : bool
        papermill's cell progress bar (on a terminal).

    Raises
    ------
    XbqError
        The notebook is missing, a parameter is unknown, or a cell raised: one line with the
        cell's execution count, the exception and its message.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    src = Path(notebooks_dir or NOTEBOOKS_DIR) / f"{name}.ipynb"
    if not src.is_file():
        raise XbqError(f"chapter {name}: {src} does not exist")
    known = parameters_of(src)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise XbqError(f"chapter {name}: no parameter(s) {', '.join(unknown)} in its "
                       f"parameters cell (it has {', '.join(known) or 'none'})")
    out_dir = Path(out_dir).resolve()
    dst = out_dir / "chapters" / f"{name}.ipynb"
    dst.parent.mkdir(parents=True, exist_ok=True)
    log = dst.with_suffix(".kernel.log")
    try:
        with open(log, "w") as fh:
            papermill.execute_notebook(str(src), str(dst), parameters=parameters,
                                       kernel_name="python3", cwd=str(out_dir),
                                       progress_bar=progress, log_output=False,
                                       execution_timeout=timeout_s,
                                       kernel_manager_class=_logging_manager(fh))
    except PapermillExecutionError as exc:
        msg = " ".join(str(exc.evalue).split())[:300]
        raise XbqError(f"chapter {name}: cell {exc.exec_count} raised {exc.ename}: "
                       f"{msg}") from None
    return dst


def _logging_manager(fh):
    """A kernel manager whose kernel writes its own stderr (start-up chatter, a crash) to
    ``fh`` instead of the terminal."""
    from jupyter_client.manager import AsyncKernelManager

    class Manager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw.setdefault("stderr", fh)
            return await super().start_kernel(**kw)

    return Manager


#: The link back to the report that every chapter page starts with.
BACK_LINK = ('<nav style="font: 14px sans-serif; margin: 1em 2em"><a href="../index.html">'
             '&larr; the report (index.html)</a></nav>')


def to_html(ipynb) -> Path:
    """Render an executed notebook to HTML beside it (images embedded); return the path.

    The published page reads as a chapter: its title is the chapter's (:data:`CHAPTERS`),
    it starts with a link back to the report, and the code cells are left out (their outputs,
    the text and the figures stay; the notebook keeps its code).
    """
    import nbformat
    from nbconvert import HTMLExporter

    ipynb = Path(ipynb)
    nb = nbformat.read(ipynb, as_version=4)
    nb.metadata["title"] = CHAPTERS.get(ipynb.stem, ipynb.stem)
    exporter = HTMLExporter(template_name="lab", exclude_input=True,
                            exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + BACK_LINK, body, count=1)
    out = ipynb.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def error_outputs(ipynb) -> list[str]:
    """``ename: evalue`` of every error output in an executed notebook."""
    nb = json.loads(Path(ipynb).read_text())
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb["cells"]
            if c["cell_type"] == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def missing_images(path) -> list[str]:
    """Images an HTML page references that do not exist beside it (``data:`` images are
    embedded and always there)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    problems = []
    for src in re.findall(r'<img[^>]+src="([^"]+)"', text):
        if src.startswith("data:"):
            continue
        target = (path.parent / html.unescape(src)).resolve()
        if not target.is_file():
            problems.append(f"{path.name}: image {src} does not exist")
    return problems
