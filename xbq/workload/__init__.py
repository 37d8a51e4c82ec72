"""What the guest asks of the disk: fio-like workloads (:mod:`xbq.workload.fio`), the
seeded random streams they draw from (:mod:`xbq.workload.rng`) and latency histograms
(:mod:`xbq.workload.hist`). Nothing here knows the protocol; every engine uses it."""
