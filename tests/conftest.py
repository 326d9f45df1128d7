"""Hypothesis profiles: ``dev`` (default, quick), ``ci`` (sized for CI on 2 cores), ``thorough`` (nightly)."""

import os

from hypothesis import HealthCheck, settings

# Gradient checks are slow per example (2 forwards per input element), so no per-example deadline; `ci` is
# derandomized so a CI run is reproducible, and sized for the whole suite to stay well under 15 minutes.
_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("dev", max_examples=30, **_common)
settings.register_profile("ci", max_examples=50, derandomize=True, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=500, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
