import os
import subprocess
import sys


def test_missing_world_weights_name_the_fix(tmp_path):
    """With $JAXDISSECT_WORLD_WEIGHTS pointing at an empty folder, loading a shipped
    world model fails with an error that names the folder and how to fix it."""
    code = ("from jaxdissect.world.classifier import load_classifier\n"
            "try:\n    load_classifier()\n"
            "except FileNotFoundError as e:\n    print('ERR', e)\n")
    env = dict(os.environ, JAXDISSECT_WORLD_WEIGHTS=str(tmp_path), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300).stdout
    assert out.startswith("ERR") and str(tmp_path) in out
    assert "JAXDISSECT_WORLD_WEIGHTS" in out and "pip install -e ." in out
