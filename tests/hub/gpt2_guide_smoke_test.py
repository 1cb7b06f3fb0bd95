"""The GPT-2 Medium MatTA guide, end to end, offline (tiny random models, in-memory text)."""

import os
import subprocess
import sys

import keras
import pytest

pytest.importorskip("keras_hub")

GUIDE = os.path.join(os.path.dirname(__file__), "..", "..", "guides", "gpt2_medium_matta.py")


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="tests/guides_test.py runs every guide on JAX; this adds one more backend (torch, "
    "the fastest here) without running the ~1 minute guide three times",
)
def test_guide_runs_in_smoke_mode(tmp_path):
    env = dict(os.environ, KERAS_MATTA_SMOKE="1", KERAS_BACKEND=keras.backend.backend(),
               TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, os.path.abspath(GUIDE)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    out = result.stdout
    assert "max |Student width - GPT-2 Medium| logit difference: 0.0" in out or (
        "logit difference: " in out
        and float(out.split("logit difference: ")[1].split()[0]) < 1e-4), out
    for label in ("GPT-2 Medium (original)", "TA", "Student (GPT-2 Medium shape)",
                  "Mix: TA first, Student last"):
        assert label in out, out
    assert "reloaded as GPT2CausalLM" in out, out
