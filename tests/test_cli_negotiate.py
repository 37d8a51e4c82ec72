"""``xbq negotiate``: the printed tree and summary, --json, exit codes, one-line errors."""

import json

import pytest

from xbq.blkif import negotiate as xenbus
from xbq.cli import negotiate as cli_negotiate


@pytest.fixture
def run(cli):
    """``run(*argv)``: ``xbq negotiate ARGV`` as ``(exit status, stdout, stderr)``."""
    def negotiate(*argv):
        res = cli("negotiate", *argv)
        return res.rc, res.out, res.err
    return negotiate


def test_prints_the_tree_and_summary(run):
    code, out, err = run("--vcpus", "2", "--max-ring-page-order", "1")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == 'local = ""'
    assert '      multi-queue-num-queues = "2"' in lines
    assert '       ring-ref1 = "9"' in lines  # queue-0's second page
    assert '      ring-page-order = "1"' in lines
    assert "rings: 2 x 2 pages (ring-page-order 1, 64 slots each)" in out
    assert "(Initialising -> Initialised -> Connected)" in out
    assert "(Initialising -> InitWait -> Connected)" in out
    assert "persistent grants yes, indirect segments 32" in out


def test_json_shape(run):
    code, out, err = run("--json", "--old-backend", "--no-persistent")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert set(doc) == {"connected", "nr_rings", "ring_page_order", "nr_ents", "front_state",
                        "back_state", "error", "features", "store"}
    assert doc["connected"] is True and doc["nr_rings"] == 1 and doc["nr_ents"] == 32
    assert doc["front_state"] == doc["back_state"] == "Connected" and doc["error"] is None
    assert doc["features"]["feature_persistent"] is False
    fe = "/local/domain/1/device/vbd/51712"
    assert doc["store"][f"{fe}/ring-ref"].isdigit()
    assert f"{fe}/multi-queue-num-queues" not in doc["store"]


def test_refused_handshake_prints_the_error_node_and_exits_1(cli):
    res = cli("negotiate", "--num-queues", "9", "--backend-max-queues", "8")
    assert 'error = "-1 guest requested 9 queues, exceeding the maximum of 8."' in res.out
    res.one_line_error("handshake refused")


def test_refused_handshake_with_json_still_prints_json(run):
    code, out, err = run("--json", "--omit", "event-channel", "--max-queues", "1")
    assert code == 1 and err.count("\n") == 1
    doc = json.loads(out)
    assert doc["connected"] is False and doc["nr_rings"] == 0
    assert "event-channel" in doc["error"]


@pytest.mark.parametrize("argv", [
    ["--vcpus", "0"], ["--vcpus", "x"], ["--max-queues", "-1"], ["--ring-page-order", "9"],
    ["--num-queues", "100000"], ["--bogus"],
])
def test_bad_arguments_are_one_line_usage_errors(cli, argv):
    res = cli("negotiate", *argv)
    # unknown options are reported by the top-level parser ("xbq: error: ...")
    res.one_line_error(prog="" if argv == ["--bogus"] else "negotiate")
    assert res.rc == 2 and res.out == ""


def test_bad_omit_key_is_a_one_line_error(cli):
    res = cli("negotiate", "--omit", "nonsense")
    res.one_line_error("cannot omit")
    assert res.out == ""


def test_cli_limits_match_the_library():
    assert cli_negotiate.MAX_FORCED_RING_ORDER == xenbus.MAX_FORCED_RING_ORDER
    assert cli_negotiate.MAX_FORCED_QUEUES == xenbus.MAX_FORCED_QUEUES
