"""Shared test settings: hypothesis profiles (seeded, deterministic) and small fixtures."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", derandomize=True, deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "thorough", derandomize=False, deadline=None, max_examples=600,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("XBQ_HYPOTHESIS_PROFILE", "default"))
