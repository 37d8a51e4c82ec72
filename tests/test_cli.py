"""The xbq command line: help, one-line errors, exit codes, and the commands of the core."""

import json
import subprocess
import sys

import pytest

from xbq.cli import commands, main


def run(*args):
    return subprocess.run([sys.executable, "-m", "xbq", *args], capture_output=True, text=True,
                          timeout=600)


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for name in commands():
        assert name in out.stdout
    assert {"reproduce", "seed", "negotiate", "ring"} <= set(commands())


@pytest.mark.parametrize("argv", [["ring", "--queues", "0"], ["ring", "--batch", "x"],
                                  ["nosuchcommand"], ["seed", "--bogus"]])
def test_bad_arguments_one_line_exit_2(argv):
    out = run(*argv)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_errors_are_one_line_exit_1(cli, tmp_path):
    for res, needle in ((cli("seed", tmp_path / "missing.csv"), "missing.csv"),
                        (cli("ring", "--ios", "10", "--bssplit", "4k/60"), "bssplit")):
        res.one_line_error(needle)  # (a bssplit whose shares sum to 60 %)
        assert res.rc == 1


def test_no_command_prints_help():
    out = run()
    assert out.returncode == 2 and "usage: xbq" in out.stderr


def test_ring_json(capsys):
    assert main(["ring", "--ios", "500", "--queues", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["rings"] == 2 and res["verified"] and res["ios"] == 500
    assert res["front"]["responses"] == res["back"]["responses"]


def test_ring_report(capsys):
    assert main(["ring", "--ios", "300", "--device", "null", "--no-persistent"]) == 0
    out = capsys.readouterr().out
    assert "exactly once" in out and "persistent grants off" in out


def test_reproduce_quick_writes_every_artefact(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "--quick", "--out", str(out),
                 "--steps", "handshake,ring,seed"]) == 0
    for name in ("REPORT.md", "index.html", "ring.json", "seed.txt", "xenstore-multi_ring.txt"):
        assert (out / name).stat().st_size > 0
    assert "multi-queue-num-queues = \"16\"" in (out / "xenstore-multi_ring.txt").read_text()
    assert main(["reproduce", "--out", str(out), "--steps", "nope"]) == 1
