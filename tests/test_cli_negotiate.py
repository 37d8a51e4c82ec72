"""``xbq negotiate``: the printed tree and summary, --json, exit codes, one-line errors."""

import json

import pytest

from xbq.blkif import negotiate as xenbus
from xbq.cli import main
from xbq.cli import negotiate as cli_negotiate


def run(capsys, *argv):
    code = main(["negotiate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_prints_the_tree_and_summary(capsys):
    code, out, err = run(capsys, "--vcpus", "2", "--max-ring-page-order", "1")
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


def test_json_shape(capsys):
    code, out, err = run(capsys, "--json", "--old-backend", "--no-persistent")
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


def test_refused_handshake_prints_the_error_node_and_exits_1(capsys):
    code, out, err = run(capsys, "--num-queues", "9", "--backend-max-queues", "8")
    assert code == 1
    assert 'error = "-1 guest requested 9 queues, exceeding the maximum of 8."' in out
    assert err.count("\n") == 1 and err.startswith("xbq negotiate: error: handshake refused")
    assert "Traceback" not in out + err


def test_refused_handshake_with_json_still_prints_json(capsys):
    code, out, err = run(capsys, "--json", "--omit", "event-channel", "--max-queues", "1")
    assert code == 1 and err.count("\n") == 1
    doc = json.loads(out)
    assert doc["connected"] is False and doc["nr_rings"] == 0
    assert "event-channel" in doc["error"]


@pytest.mark.parametrize("argv", [
    ["--vcpus", "0"], ["--vcpus", "x"], ["--max-queues", "-1"], ["--ring-page-order", "9"],
    ["--num-queues", "100000"], ["--bogus"],
])
def test_bad_arguments_are_one_line_usage_errors(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["negotiate", *argv])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == ""
    # unknown options are reported by the top-level parser ("xbq: error: ...")
    assert err.count("\n") == 1 and err.startswith("xbq") and ": error: " in err


def test_bad_omit_key_is_a_one_line_error(capsys):
    code, out, err = run(capsys, "--omit", "nonsense")
    assert code == 1 and out == "" and err.count("\n") == 1 and "cannot omit" in err


def test_cli_limits_match_the_library():
    assert cli_negotiate.MAX_FORCED_RING_ORDER == xenbus.MAX_FORCED_RING_ORDER
    assert cli_negotiate.MAX_FORCED_QUEUES == xenbus.MAX_FORCED_QUEUES
