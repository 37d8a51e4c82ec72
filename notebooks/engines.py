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
# # The published table, the kit's own measurement, and the twin
#
# Three views of the same question, single ring behind one lock versus per-queue rings,
# over fio's job counts:
#
# * the 2015 cover letter (`data/seed/`, 16-vCPU guest, null_blk);
# * xbq's native engine, real threads and spinlocks on the machine where
#   `data/measured/` was recorded (see its README: 2 cores, not 16);
# * the discrete-event twin of the 16-vCPU guest with the committed calibration
#   (`data/calibrated/`).
#
# Then the queueing models are fitted to the measured table, as to the seed in
# `fit_models`.

# %%
import matplotlib.pyplot as plt
import pandas as pd

from xbq.engines.des.params import load_params
from xbq.engines.des.simulate import simulate
from xbq.fit import fit
from xbq.study.datasets import load_seed
from xbq.study.paths import data_dir
from xbq.study.plots import plot_fits, plot_iops

SERIES = {"sq": "single_ring", "mq": "multi_ring"}
seed = load_seed()
measured = pd.read_csv(data_dir() / "measured" / "native-sweep-2core.csv")
measured["series"] = measured["mode"].map(SERIES)
measured.groupby(["series", "jobs"]).iops.agg(["mean", "min", "max"]).unstack(0).round(-2)

# %% [markdown]
# Every measured point was checked for exactly-once completion:

# %%
measured[["lost", "duplicated"]].sum()

# %% [markdown]
# ## The twin, with the calibrated costs
#
# Short runs (20 ms of virtual time per point) to keep the notebook quick; the calibration
# itself used at least 200k requests per point.

# %%
params = load_params(data_dir() / "calibrated" / "des-params.json")
twin = pd.concat([simulate(mode, sorted(seed.jobs.unique()), queues=16, vcpus=16, iodepth=64,
                           duration=0.02, seed=1, params=params).assign(series=series)
                  for mode, series in SERIES.items()], ignore_index=True)
cmp = seed.merge(twin[["series", "jobs", "iops"]], on=["series", "jobs"],
                 suffixes=("_seed", "_twin"))
cmp["rel_error"] = cmp.iops_twin / cmp.iops_seed - 1
cmp.round(3)

# %%
fig = plot_iops({"published (2015, 16 vCPUs)": seed,
                 "native threads (2 cores)": measured,
                 "discrete-event twin (16 vCPUs)": twin})
plt.show()

# %% [markdown]
# Where the twin says the time goes (per-resource utilisation at each point):

# %%
cols = [c for c in twin.columns if c.startswith(("util_", "notify_", "batch_"))]
twin[["series", "jobs", "iops"] + cols].round(3)

# %% [markdown]
# ## Models fitted to the measured table
#
# The same fitting engine as for the seed, on the kit's own measurement (three repetitions
# per point, so the fit sees the noise).

# %%
fits = {name: fit(measured[["series", "jobs", "queues", "vcpus", "iops"]], name,
                  bootstrap=200, seed=0) for name in ("usl", "usl-capped", "ticket")}
pd.DataFrame({(name, s): {"r2": e["r2"], "loo_rmse": e["loo_rmse"], "peak_x": e["peak_x"],
                          "peak_iops": e["peak_iops"]}
              for name, res in fits.items() for s, e in res.series.items()}).T.round(3)

# %%
fig = plot_fits(measured, fits, ncols=3)
plt.show()
