"""The blkif drivers (Linux ``drivers/block/xen-blkfront.c`` and ``xen-blkback/``):

* :mod:`xbq.blkif.blkfront` and :mod:`xbq.blkif.blkfront_xenbus`: the guest's driver, its
  data path and its xenbus half;
* :mod:`xbq.blkif.blkback` and :mod:`xbq.blkif.blkback_xenbus`: dom0's driver, likewise;
* :mod:`xbq.blkif.vbd`: the devices behind blkback (null, ramdisk);
* :mod:`xbq.blkif.blk_mq`: the block layer between fio and blkfront (queue map, splitting,
  stop and restart of a full queue);
* :mod:`xbq.blkif.negotiate`: the toolstack and the whole handshake;
* :mod:`xbq.blkif.loopback`: the protocol in one thread;
* :mod:`xbq.blkif.fuzz`: a malicious frontend and backend against the real drivers.
"""
