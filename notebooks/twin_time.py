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
# # Where the time goes in the twin
#
# The calibrated twin of the 16-vCPU guest over the seed's job counts, both drivers: how
# each CPU group spends its time (spinning on a driver lock, holding one, other work, idle),
# and what each request costs in notifications, interrupts, context switches and backend
# batching. The single ring's fall and the per-queue rings' later fall have different
# causes; this chapter shows which resource each one runs out of.

# %% tags=["parameters"]
quick = False  # 10 ms of virtual time per point instead of 100 ms
out_dir = "out"
seed = 1

# %%
from pathlib import Path

import matplotlib.pyplot as plt

from xbq.engines.des.params import load_params
from xbq.engines.des.table import simulate_table
from xbq.study.breakdown import per_request, time_breakdown
from xbq.study.datasets import load_seed
from xbq.study.paths import calibration_file
from xbq.study.plots import plot_per_request, plot_time_breakdown

FIGURES = Path(out_dir) / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
params = load_params(calibration_file())
twin = simulate_table(load_seed(), params, duration=0.01 if quick else 0.1, seed=seed)
twin.to_csv(Path(out_dir) / "twin_time.csv", index=False)
twin[["series", "jobs", "iops", "iops_table", "rel_error"]].round(3)

# %% [markdown]
# ## CPU time by state
#
# Guest vCPUs run the fio jobs and blkfront's submit and interrupt paths; dom0's run
# blkback's ring threads and the device completions. Spinning and holding refer to the
# frontend's lock (`io_lock` or a ring's lock) on the guest, and to the backend's shared
# lock in dom0.

# %%
states = time_breakdown(twin)
fig = plot_time_breakdown(states)
fig.savefig(FIGURES / "twin_time-states.png", dpi=110, bbox_inches="tight")
plt.show()

# %% [markdown]
# **Figure 1.** Where the time goes in the calibrated twin: the share of guest and dom0 vCPU
# time spinning on a lock, holding one, doing other work and idle, against fio jobs, for
# each driver.

# %%
states.pivot_table(index=["group", "series", "jobs"], columns="state",
                   values="fraction").round(3)

# %% [markdown]
# ## Per request: notifications, interrupts, batching
#
# Batching is what the event indices buy: the more requests the backend finds per pass,
# the fewer notifications per request, in both directions.

# %%
counts = per_request(twin)
fig = plot_per_request(counts)
fig.savefig(FIGURES / "twin_time-per-request.png", dpi=110, bbox_inches="tight")
plt.show()

# %% [markdown]
# **Figure 2.** Per request in the calibrated twin: notifications each way, interrupts,
# context switches and requests per backend batch, against fio jobs.

# %%
counts.pivot_table(index=["series", "jobs"], columns="metric", values="value").round(3)
