"""Shared test configuration: hypothesis profiles and thread limits.

Profiles: ``dev`` (default, quick), ``ci`` (chosen when ``CI`` is set: no deadlines, since
shared 2-core machines have noisy timings), ``nightly`` (many more examples). Select one
explicitly with ``HYPOTHESIS_PROFILE=nightly``.
"""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "ci", max_examples=30, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("nightly", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

torch.set_num_threads(max(1, min(torch.get_num_threads(), int(os.environ.get("OMP_NUM_THREADS", "2")))))
