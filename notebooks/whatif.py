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
# # What-ifs in the twin
#
# One change at a time to the calibrated 16-vCPU machine, nothing refitted: MCS queue locks
# instead of ticket spinlocks, blkback's persistent grants and free pages per ring instead of one
# device-wide pool behind one lock,
# 4-page rings, a 32-vCPU guest. The difference from the baseline is the twin's prediction of
# what each change buys (`xbq.study.whatif`).

# %% tags=["parameters"]
quick = False  # 5 ms of virtual time per point instead of 50 ms
out_dir = "out"
seed = 1

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from xbq.engines.des.params import load_params
from xbq.study.paths import calibration_file, data_dir
from xbq.study.plots import plot_rings, plot_whatifs
from xbq.study.whatif import WHATIFS, run_whatifs

FIGURES = Path(out_dir) / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
pd.DataFrame({n: {"what changes": w[0]} for n, w in WHATIFS.items()}).T

# %%
params = load_params(calibration_file())
runs = run_whatifs(params, duration=0.005 if quick else 0.05, seed=seed)
runs.to_csv(Path(out_dir) / "whatif.csv", index=False)
fig = plot_whatifs(runs)
fig.savefig(FIGURES / "whatif-iops.png", dpi=110, bbox_inches="tight")
plt.show()

# %% [markdown]
# **Figure 1.** What-ifs in the calibrated twin: IOPS against fio jobs when one mechanism is
# changed at a time (the legend names each change), beside the calibrated twin.

# %% [markdown]
# IOPS of each variant relative to the baseline at the same job count:

# %%
wide = runs.pivot_table(index=["series", "jobs"], columns="variant", values="iops")
(wide.div(wide["baseline"], axis=0) - 1).round(3)

# %% [markdown]
# ## Predictions made before they are fitted
#
# The merged series (v4, Nov 2015) made blkback's persistent-grant tree and free-page pool
# per ring and reported that multi-queue then scaled further (on its own, different
# machine: 690k IOPS baseline; rings alone 4/8/16 → 1024k/800k/750k, with per-ring pools
# 1600k/1450k/1320k). With the costs calibrated on the 2015 RFC table and nothing refitted,
# the twin's prediction of IOPS against the ring count at 16 fio jobs, committed in
# `data/predictions/` (with its command and commit) before any such table was fitted:

# %%
pred = pd.read_csv(data_dir() / "predictions" / "rings-16jobs.csv")
pred_wide = pred.pivot(index="queues", columns="variant", values="iops")
fig = plot_rings(pred_wide)
fig.savefig(FIGURES / "predictions-rings.png", dpi=110, bbox_inches="tight")
plt.show()
(pred_wide / 1e3).round(0)


# %% [markdown]
# **Figure 2.** The calibrated twin's predictions of IOPS against the ring count at 16 fio
# jobs for each variant (shared or per-ring backend pools, MCS locks, larger rings), made
# before any such table was fitted.
