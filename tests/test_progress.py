"""Progress bars show on a terminal only; lines still reach stdout; --json keeps quiet."""

import io
import sys

from xbq.progress import Progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_on_a_terminal_and_nothing_elsewhere(monkeypatch, capsys):
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    with Progress(3, "sweep", unit="point") as bar:
        assert bar.active
        for k in range(3):
            bar.update(1, jobs=k)
    text = tty.getvalue()
    assert "sweep" in text and "3/3" in text and "jobs=2" in text
    with Progress(3, "sweep", quiet=True) as bar:  # --json
        assert not bar.active
        bar.update(1)
    assert tty.getvalue() == text
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe, a CI log
    with Progress(2, "sweep") as bar:
        assert not bar.active
        bar.update(2)
        bar.write("a row")
    assert sys.stderr.getvalue() == "" and capsys.readouterr().out == "a row\n"


def test_the_cli_commands_with_long_runs_report_progress():
    """Every long command builds a Progress bar (or papermill's, for the chapters)."""
    from pathlib import Path

    cli = Path(__file__).resolve().parents[1] / "xbq" / "cli"
    for name in ("calibrate", "simulate", "measure", "fuzz"):
        assert "Progress(" in (cli / f"{name}.py").read_text(), name
    study = Path(__file__).resolve().parents[1] / "xbq" / "study" / "reproduce.py"
    assert "Progress(" in study.read_text()
