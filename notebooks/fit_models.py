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
# # Fitting queueing models to the 2015 single-ring vs multi-ring table
#
# Loads the seed table, fits every model of `xbq.models` (each series separately, the
# mechanistic xen-blk model jointly with one parameter set for both drivers), shows the
# comparison table of `docs/models.md` with every model's intervals, and plots the fits with
# bootstrap bands and the residuals. Runs top to bottom in a few seconds; `xbq reproduce`
# executes it with the parameters below (figures go to `out_dir/figures/`).

# %% tags=["parameters"]
quick = False  # 100 bootstrap resamples instead of 1000
out_dir = "out"

# %%
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # plain `python notebooks/fit_models.py`: no display
    matplotlib.use("Agg")
import numpy as np
import pandas as pd

from xbq.fit import compare
from xbq.fit.compare import comparison_frame
from xbq.models import ld_mva, ld_mva_textbook
from xbq.study.datasets import load_seed
from xbq.study.plots import plot_fit_bands, plot_residuals
from xbq.study.tables import parameter_table

OUT = Path(out_dir) / "figures"
OUT.mkdir(parents=True, exist_ok=True)
BOOTSTRAP = 100 if quick else 1000
seed = load_seed()
seed.style.hide(axis="index").format({"iops": "{:,.0f}"})

# %% [markdown]
# ## Fit every model and compare
# `k` counts free parameters of that fit (the joint xen-blk fit has 6 for 12 points);
# AICc counts sigma as a parameter and is `None` where n - k - 1 <= 0.

# %%
table, fits = compare(seed, bootstrap=BOOTSTRAP, seed=0, return_fits=True)
comparison_frame(table).style.hide(axis="index")

# %% [markdown]
# ## Every fitted parameter, with its standard error and bootstrap interval
# Intervals are the 2.5-97.5 % percentiles of the parametric bootstrap; a parameter whose
# interval touches its bound is pinned by the bound, not by the data.

# %%
params = parameter_table(fits)
params.style.hide(axis="index").format(precision=4)

# %% [markdown]
# ## Fits with bootstrap bands

# %%
pred = pd.concat([f.predictions() for f in fits.values()], ignore_index=True)
data = pred[pred.kind == "data"]
fig = plot_fit_bands(pred)
fig.savefig(OUT / "fit_models-fits.png", dpi=110)

# %% [markdown]
# **Figure 1.** Every model fitted to the published table, one panel per model: the fitted
# curve of each series, its 95 % bootstrap band and the data.

# %% [markdown]
# ## Residuals
# Plain USL on `single_ring` under-shoots the peak at 4 jobs and keeps falling past 32
# jobs where the data are flat; the monotone models (Amdahl, MVA, repairman, MCS) cannot
# produce the multi-ring fall at all.

# %%
fig = plot_residuals(data)
fig.savefig(OUT / "fit_models-residuals.png", dpi=110)

# %% [markdown]
# **Figure 2.** Relative residuals, (observed − fit) / fit, of every model against fio jobs,
# one panel per series: a model that fits leaves no pattern.

# %% [markdown]
# ## Why the load-dependent MVA here is computed in log space
# A saturated single-server station next to a 16-server one: the textbook recursion's
# p(0|n) = 1 - sum goes negative; the normalised log-space marginals do not.

# %%
X_tb, P_tb = ld_mva_textbook(64, [1.0, 16.0], servers=[1, 16])
stable = ld_mva(256, [1.0, 16.0], servers=[1, 16])
print(f"textbook min p: {P_tb.min():.3g}; stable min p up to N=256: {stable.marginals.min():.3g}; "
      f"max |sum p - 1|: {np.abs(stable.marginals.sum(axis=2) - 1).max():.2g}")

# %% [markdown]
# ## The xen-blk fit in words

# %%
print(fits["xenblk"].report())
