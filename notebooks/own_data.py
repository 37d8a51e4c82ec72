# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fitting your own data
#
# From fio's JSON to fitted models. Run the 2015 experiment on a Xen guest
# (`xbq fio job --filename /dev/xvdb --out iometer.fio`, then
# `fio --output-format=json+ iometer.fio > result.json`), import it
# (`xbq fio import result.json --series multi_ring --vcpus 16 --queues 16 --out mine.csv`:
# the guest's vCPUs and rings are not in fio's JSON), and fit. This chapter
# does the same on `data/examples/`: real fio output of the IOmeter job on fio's `null`
# engine on the development VM (see that folder's README), standing in for your guest.

# %% tags=["parameters"]
quick = False  # 100 bootstrap resamples instead of 1000
out_dir = "out"
fio_files = None  # fio JSON result files; None: the example in data/examples/
series = None  # the series every row belongs to; None: from the fio job names
vcpus = 2  # the guest's vCPUs (the example ran on the 2-vCPU development VM; None: unknown)
queues = None  # the rings its disk negotiated (None: not recorded; xen-blk is then skipped)

# %%
from pathlib import Path

import matplotlib.pyplot as plt

from xbq.fit import compare
from xbq.study.fio import import_fio
from xbq.study.paths import data_dir
from xbq.study.plots import plot_fits, plot_iops

FIGURES = Path(out_dir) / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
files = fio_files or sorted((data_dir() / "examples").glob("fio-*.json"))
table = import_fio(files, series=series, vcpus=vcpus, queues=queues)
settings = [c for c in ("vcpus", "queues") if c in table]
table[["series", "jobs", *settings, "iodepth", "iops", "read_iops", "write_iops",
       "lat_mean_us", "lat_p99_us", "fio_version"]]

# %%
fig = plot_iops({"your fio results": table})
fig.savefig(FIGURES / "own_data-iops.png", dpi=110, bbox_inches="tight")
plt.show()

# %% [markdown]
# **Figure 1.** Your fio results: IOPS against fio jobs per series (mean and min-max when a
# point was repeated).

# %% [markdown]
# ## The models on your table
#
# The same comparison as for the seed (`xbq.fit.compare`), with the guest's vCPUs as the
# contender cap. Fewer points than free parameters leave some fits undetermined; the table
# says so rather than hiding it.

# %%
scores, fits = compare(table[["series", "jobs", "iops", *settings]],
                       bootstrap=100 if quick else 1000, seed=0, return_fits=True,
                       on_error="note")
scores.to_csv(Path(out_dir) / "own_data-models.csv", index=False)
scores

# %%
fig = plot_fits(table, fits)
fig.savefig(FIGURES / "own_data-fits.png", dpi=110, bbox_inches="tight")
plt.show()


# %% [markdown]
# **Figure 2.** The models fitted to your fio results, with bootstrap bands and the R² of
# each fit.
