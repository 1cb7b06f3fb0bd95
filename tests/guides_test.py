import os
import subprocess
import sys

import keras
import pytest

GUIDES_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "guides")
sys.path.insert(0, GUIDES_DIR)
import sync_notebooks  # noqa: E402

GUIDES = sync_notebooks.guide_paths()


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("path", GUIDES, ids=os.path.basename)
def test_notebook_is_in_sync_with_its_guide(path):
    target = sync_notebooks.notebook_path(path)
    assert os.path.exists(target), f"run `python guides/sync_notebooks.py` to create {target}"
    with open(target) as f:
        assert f.read() == sync_notebooks.render(sync_notebooks.notebook_for(path)), (
            f"{target} is stale: run `python guides/sync_notebooks.py`"
        )


@pytest.mark.backend_agnostic
def test_notebook_cells_follow_the_guide():
    notebook = sync_notebooks.notebook_for(GUIDES[0])
    kinds = [cell["cell_type"] for cell in notebook["cells"]]
    assert kinds[0] == "markdown" and "colab-badge.svg" in "".join(notebook["cells"][0]["source"])
    assert "code" in kinds and kinds.count("markdown") > 1


# Each guide is backend-agnostic; CI smoke-runs each on one backend, spread so that the three
# backends' pytest processes finish together. The distributed guide's JAX part runs on
# simulated CPU devices, whose collectives can starve on a loaded 2-core machine; its JAX code
# paths are tested in tests/distribution with a collective timeout and retries.
SMOKE_BACKEND = {
    "distributed_training.py": "tensorflow",
    "gpt2_medium_matta.py": "tensorflow",
    "getting_started.py": "tensorflow",
    "shampoo.py": "tensorflow",
    "majority_kernels.py": "torch",
    "matta_language_models.py": "torch",
}


@pytest.mark.backend_agnostic
def test_every_guide_has_a_smoke_backend():
    assert sorted(SMOKE_BACKEND) == sorted(os.path.basename(path) for path in GUIDES)


@pytest.mark.slow
@pytest.mark.parametrize("path", GUIDES, ids=os.path.basename)
def test_guide_runs_in_smoke_mode(path, tmp_path):
    if SMOKE_BACKEND.get(os.path.basename(path)) != keras.backend.backend():
        pytest.skip(f"smoke-run on {SMOKE_BACKEND.get(os.path.basename(path))}")
    env = dict(os.environ, KERAS_MATTA_SMOKE="1", MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, path], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
