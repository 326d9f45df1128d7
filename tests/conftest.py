"""Hypothesis profiles: ``dev`` (default, quick), ``ci`` (sized for CI on 2 cores), ``thorough`` (nightly);
and the ``needs`` marker for tests that use an outside binary."""

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

# Gradient checks are slow per example (2 forwards per input element), so no per-example deadline; `ci` is
# derandomized so a CI run is reproducible, and sized for the whole suite to stay well under 15 minutes.
_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("dev", max_examples=30, **_common)
settings.register_profile("ci", max_examples=50, derandomize=True, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=500, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# A test marked `@pytest.mark.needs("dot")` is skipped, with the command that installs the binary, on a
# machine that has not got it: the README's test command must pass on a fresh machine.
INSTALL = {"dot": "apt-get install graphviz", "chromium": "apt-get install chromium"}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs"):
        for binary in marker.args:
            if shutil.which(binary) is None:
                how = INSTALL.get(binary, f"install {binary}")
                pytest.skip(f"needs the `{binary}` binary, which is not installed here: {how}")
