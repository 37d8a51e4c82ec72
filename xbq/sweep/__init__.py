"""Sweeps of either engine over a grid of settings, resumable, on Dask distributed.

``xbq.sweep.run(spec, client=None)`` runs a sweep (a TOML/JSON file, a dict or a
:class:`SweepSpec`: :mod:`xbq.sweep.spec`) and returns the tidy frame; each point is one task
(:mod:`xbq.sweep.tasks`), on a local cluster by default or on an existing one, and its row is
stored by the client the moment it finishes (:mod:`xbq.sweep.runner`). :func:`summarize`
pools replications into means and t-intervals; :func:`mapper` runs any list of tasks on a
client (the calibration's machine settings). See ``docs/sweep.md``.
"""

from xbq.sweep.runner import connect, local_client, run
from xbq.sweep.spec import SweepSpec, load_spec, spec_from_dict
from xbq.sweep.summary import summarize


def mapper(client):
    """A ``map`` for :func:`xbq.study.calibrate.calibrate`: runs ``fn`` on each item as
    a task of ``client`` and yields ``(index, result)`` as they finish."""
    def run_all(fn, items):
        from distributed import as_completed

        futs = client.map(fn, items, pure=False)
        index = {f.key: i for i, f in enumerate(futs)}
        for fut in as_completed(futs):
            yield index[fut.key], fut.result()
    return run_all


__all__ = ["run", "summarize", "load_spec", "spec_from_dict", "SweepSpec", "local_client",
           "connect", "mapper"]
