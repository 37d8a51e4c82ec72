"""The study on top of the engines and models: data, results, figures, the reproduction.

* :mod:`xbq.study.datasets`: the published seed table and any tidy IOPS table;
* :mod:`xbq.study.paths`: where data and outputs live, the commit;
* :mod:`xbq.study.results`: the results store (resumable, never loses a point);
* :mod:`xbq.study.plots`: the figures;
* :mod:`xbq.study.tables`: the model-comparison tables of ``docs/models.md``;
* :mod:`xbq.study.reproduce`: ``xbq reproduce``'s steps.
"""
