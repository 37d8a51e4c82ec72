"""The two engines that run the protocol core: real threads and the discrete-event twin.

* :mod:`xbq.engines.native`: fio-like jobs and blkback's ring threads as OS threads on the
  machine at hand (measured IOPS);
* :mod:`xbq.engines.des`: the same calls in virtual time, a 16-vCPU guest on any laptop;
* :mod:`xbq.engines.schema`: the tidy row both return (``COLUMNS``) and its point key.
"""
