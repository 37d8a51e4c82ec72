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
# instead of ticket spinlocks, blkback's state per ring instead of one device-wide lock,
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
from xbq.study.paths import data_dir
from xbq.study.plots import plot_whatifs
from xbq.study.whatif import WHATIFS, run_whatifs

FIGURES = Path(out_dir) / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
pd.DataFrame({n: {"what changes": w[0]} for n, w in WHATIFS.items()}).T

# %%
params = load_params(data_dir() / "calibrated" / "des-params.json")
runs = run_whatifs(params, duration=0.005 if quick else 0.05, seed=seed)
runs.to_csv(Path(out_dir) / "whatif.csv", index=False)
fig = plot_whatifs(runs)
fig.savefig(FIGURES / "whatif-iops.png", dpi=110, bbox_inches="tight")
plt.show()

# %% [markdown]
# IOPS of each variant relative to the baseline at the same job count:

# %%
wide = runs.pivot_table(index=["series", "jobs"], columns="variant", values="iops")
(wide.div(wide["baseline"], axis=0) - 1).round(3)
