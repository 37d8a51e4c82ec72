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
# # The published table, the kit's own measurements, and the twin
#
# Three views of the same question, single ring behind one lock versus per-queue rings,
# over fio's job counts:
#
# * the 2015 cover letter (`data/seed/`, 16-vCPU guest, null_blk);
# * xbq's native engine, real threads and spinlocks: the sweep committed in `data/measured/`
#   (see its README: 2 cores, not 16) and, when `xbq reproduce` runs this notebook, the
#   short measurement it has just taken on this machine;
# * the discrete-event twin of the 16-vCPU guest with the committed calibration
#   (`data/calibrated/`).
#
# Then the queueing models are fitted to the measured table, as to the seed in
# `fit_models`.

# %% tags=["parameters"]
quick = False  # shorter twin runs, fewer bootstrap resamples
out_dir = "out"
native_csv = None  # this machine's measurement (xbq reproduce's native step), if any
twin_csv = None  # the twin on the seed's points (xbq reproduce's twin step); None: run it

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from xbq.engines.des.params import load_params
from xbq.engines.des.table import simulate_table
from xbq.fit import fit
from xbq.study.datasets import load_seed
from xbq.study.paths import calibration_file, data_dir
from xbq.study.plots import plot_fits, plot_iops

SERIES = {"sq": "single_ring", "mq": "multi_ring"}
FIGURES = Path(out_dir) / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
seed = load_seed()
measured = pd.read_csv(data_dir() / "measured" / "native-sweep-2core.csv")
measured["series"] = measured["mode"].map(SERIES)
measured.groupby(["series", "jobs"]).iops.agg(["mean", "min", "max"]).unstack(0).round(-2)

# %% [markdown]
# Every measured point was checked for exactly-once completion:

# %%
measured[["lost", "duplicated"]].sum()

# %% [markdown]
# This machine, now (when `native_csv` is given):

# %%
here = None
if native_csv is not None and Path(native_csv).exists():
    here = pd.read_csv(native_csv)
    here["series"] = here["mode"].map(SERIES)
    print(here[["series", "jobs", "queues", "iops", "lat_p50_us", "lock_contended_frac",
                "cpu_util"]].round(3).to_string(index=False))

# %% [markdown]
# ## The twin, with the calibrated costs
#
# Each seed point is simulated with the committed costs (`xbq.engines.des.table.
# simulate_table`); the calibration itself used at least 200k requests per point.

# %%
params = load_params(calibration_file())
if twin_csv is not None and Path(twin_csv).exists():
    twin = pd.read_csv(twin_csv)
else:
    twin = simulate_table(seed, params, duration=0.01 if quick else 0.1, seed=1)
twin[["series", "jobs", "iops_table", "iops", "rel_error"]].round(3)

# %%
views = {"published (2015, 16 vCPUs)": seed, "native threads (2 cores, committed)": measured,
         "discrete-event twin (16 vCPUs)": twin}
if here is not None:
    views["native threads (this machine)"] = here
fig = plot_iops(views)
fig.savefig(FIGURES / "engines-views.png", dpi=110, bbox_inches="tight")
plt.show()

# %% [markdown]
# **Figure 1.** The same question in every view: IOPS against fio jobs for the published
# 2015 table, the native engine's committed 2-core sweep, the calibrated twin and (when run)
# the native engine on this machine. Points with repetitions show their mean and min-max.

# %% [markdown]
# ## Models fitted to the measured table
#
# The same fitting engine as for the seed, on the kit's own measurement (three repetitions
# per point, so the fit sees the noise).

# %%
fits = {name: fit(measured[["series", "jobs", "queues", "vcpus", "iops"]], name,
                  bootstrap=50 if quick else 200, seed=0)
        for name in ("usl", "usl-capped", "ticket")}
pd.DataFrame({(name, s): {"r2": e["r2"], "loo_rmse": e["loo_rmse"], "peak_x": e["peak_x"],
                          "peak_iops": e["peak_iops"]}
              for name, res in fits.items() for s, e in res.series.items()}).T.round(3)

# %%
poor = sorted(f"{name} on {s} (R² {e['r2']:.2f})" if e["r2"] is not None
              else f"{name} on {s} (fit failed)"
              for name, res in fits.items() for s, e in res.series.items()
              if e["r2"] is None or e["r2"] < 0.5)
print("These models do not fit the kit's own measurement: " + "; ".join(poor) + ". The "
      "host model of docs/native.md, which counts the host's CPUs, is the one that does."
      if poor else "Every model here fits the measurement with R² of at least 0.5.")

# %%
fig = plot_fits(measured, fits, ncols=3)
fig.savefig(FIGURES / "engines-fits.png", dpi=110, bbox_inches="tight")
plt.show()


# %% [markdown]
# **Figure 2.** USL, capped USL and the ticket-lock model fitted to the committed 2-core
# native sweep, per series, with bootstrap bands; the R² in each title says how well (or
# badly) each model fits the kit's own measurement.
