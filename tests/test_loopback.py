"""The single-thread loopback: exactly once, verified data, and the effect of batching."""

import pytest

from xbq.blkif.loopback import loopback
from xbq.blkif.negotiate import negotiate
from xbq.errors import ProtocolError, XbqError


def conn(**kw):
    c = negotiate(vcpus=4, max_queues=kw.pop("queues", 2), sectors=1 << 14, **kw)
    assert c.connected
    return c


@pytest.mark.parametrize("persistent", [True, False])
@pytest.mark.parametrize("indirect", [256, 0])
def test_ramdisk_workload_verified(persistent, indirect):
    res = loopback(conn(feature_persistent=persistent, backend_max_indirect_segments=indirect),
                   nr_ios=1500, batch=4, device="ramdisk", dev_sectors=1 << 14, seed=3)
    assert res["verified"] and res["ios"] == 1500
    assert res["requests"] >= res["ios"]  # 64 KiB I/Os split without indirect descriptors
    assert (res["requests"] > res["ios"]) == (indirect == 0)
    assert res["back"]["responses"] == res["front"]["responses"] == res["requests"]


def test_batching_cuts_notifications():
    one = loopback(conn(queues=1), nr_ios=2000, batch=1, dev_sectors=1 << 14)
    many = loopback(conn(queues=1), nr_ios=2000, batch=8, dev_sectors=1 << 14)
    assert one["front"]["notify"] == one["requests"]  # the backend sleeps after each
    assert many["front"]["notify"] == pytest.approx(many["requests"] / 8, rel=0.05)


def test_wrong_data_is_detected(monkeypatch):
    """The check is real: a disk that does not hold what was written fails the run."""
    import xbq.blkif.loopback as lb

    real = lb.new_vbd

    def stale_disk(kind, sectors):
        vbd = real(kind, sectors)
        vbd.disk[:] = 0xFF  # reads of sectors never written return garbage
        return vbd

    monkeypatch.setattr(lb, "new_vbd", stale_disk)
    with pytest.raises(ProtocolError, match="read back wrong data"):
        loopback(conn(queues=1), nr_ios=300, batch=1, device="ramdisk", dev_sectors=1 << 14)


def test_a_batch_larger_than_the_ring_waits_on_the_stopped_queue():
    """blk-mq's stop and restart: requests that find the ring full wait on the hardware
    queue and go out when the interrupt restarts it; every one completes, verified."""
    c = conn(queues=1, backend_max_indirect_segments=0)
    res = loopback(c, nr_ios=600, batch=3 * c.nr_ents, device="ramdisk", dev_sectors=1 << 14,
                   seed=4)
    assert res["front"]["ring_full"] > 0  # the ring did fill
    assert res["back"]["responses"] == res["front"]["responses"] == res["requests"]
    assert res["verified"]


def test_bad_arguments():
    with pytest.raises(XbqError):
        loopback(conn(), nr_ios=0)
    with pytest.raises(XbqError, match="only be verified"):
        loopback(conn(), nr_ios=10, device="null", verify=True)
