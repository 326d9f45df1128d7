import os
import subprocess
import sys

import pytest

CHECK = "import microgradcnn, microgradcnn._malloc as m; print(m.tuned)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_import_tunes_glibc_malloc_unless_opted_out():
    env = {k: v for k, v in os.environ.items() if k != "MICROGRADCNN_MALLOC"}
    tuned = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
    assert tuned.stdout.strip() == "True"
    env["MICROGRADCNN_MALLOC"] = "default"
    kept = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
    assert kept.stdout.strip() == "False"
