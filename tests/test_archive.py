"""The study archive (xbq reproduce --archive): one file, self-contained pages, and the command
it names reruns the twin's and the fits' numbers."""

import os
import subprocess
import sys
import tarfile

import pandas as pd
import pytest

from xbq.errors import XbqError
from xbq.study.archive import archive_folder, check_target, embed_images, write_archive

STEPS = ["seed", "models", "twin"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A quick reproduction of the steps whose numbers an archive must rerun, and its
    archive, unpacked."""
    from xbq.study.reproduce import reproduce

    root = tmp_path_factory.mktemp("archive")
    out = root / "out"
    assert reproduce(out, quick=True, steps=STEPS, progress=False, echo=lambda s: None) == []
    info = write_archive(out, root / "xbq-study.tar.gz", quick=True, steps=STEPS)
    with tarfile.open(info["path"]) as tar:
        names = tar.getnames()
        tar.extractall(root / "unpacked", filter="data")
    return out, info, names, root / "unpacked" / info["folder"]


def test_the_archive_holds_site_data_source_environment_and_the_command(study):
    out, info, names, top = study
    assert info["folder"] == "xbq-study" and all(n.startswith("xbq-study/") for n in names)
    for need in ("site/index.html", "data/seed/xen-blkmq-rfc-2015.csv",
                 "data/calibrated/des-params.json", "source/pyproject.toml",
                 "source/xbq/__init__.py", "environment/requirements.lock",
                 "environment/environment.yml", "PROVENANCE.json", "rerun.sh", "README.md"):
        assert (top / need).is_file(), need
    lock = (top / "environment" / "requirements.lock").read_text()
    import re

    assert "numba==" in lock and "numpy==" in lock
    assert not re.search(r"^xbq\b", lock, flags=re.M)  # the kit itself comes from source/
    assert "- pip:" in (top / "environment" / "environment.yml").read_text()
    # every page opens alone: no image is fetched from beside it
    page = (top / "site" / "index.html").read_text()
    assert 'src="data:image/png;base64,' in page
    assert 'src="figures/' not in page
    script = (top / "rerun.sh").read_text()
    assert "--quick --steps seed,models,twin" in script
    # the environment's Python is named absolutely: the command runs from source/
    assert 'PY="$PWD/.venv/bin/python"' in script and "\ncd source\n" in script


def test_the_command_it_names_reruns_the_twins_and_the_fits_numbers(study):
    out, _, _, top = study
    env = {**os.environ, "XBQ_RERUN_PYTHON": sys.executable}
    env.pop("PYTHONPATH", None)
    run = subprocess.run(["sh", str(top / "rerun.sh")], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    for name, cols in (("twin.csv", ["series", "jobs", "iops", "rel_error"]),
                       ("models.csv", None)):
        a, b = pd.read_csv(out / name), pd.read_csv(top / "rerun" / name)
        cols = cols or [c for c in a.columns if c in b.columns]
        pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=False, rtol=1e-9)


def test_embed_images_inlines_relative_pictures_and_names_missing_ones(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(b"\x89PNG fake")
    html = ('<img src="figures/a.png"><img src=\'figures/none.png\'>'
            '<img src="https://example.org/b.png"><img src="data:image/png;base64,AA">')
    page, missing = embed_images(html, tmp_path)
    assert 'src="data:image/png;base64,iVBORyBmYWtl"' in page
    assert missing == ["figures/none.png"]
    assert "https://example.org/b.png" in page and page.count("data:") == 2


def test_an_archive_is_never_written_over_a_file(tmp_path):
    (tmp_path / "a.tar.gz").write_text("keep")
    with pytest.raises(XbqError, match="exists"):
        check_target(tmp_path / "a.tar.gz")
    with pytest.raises(XbqError, match="does not exist"):
        check_target(tmp_path / "no" / "a.tar.gz")
    with pytest.raises(XbqError, match="tar.gz"):
        check_target(tmp_path / "a.zip")
    with pytest.raises(XbqError, match="index.html"):
        write_archive(tmp_path, tmp_path / "b.tar.gz")
    assert archive_folder("x/y/study-1.tgz") == "study-1"
