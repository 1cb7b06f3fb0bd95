import os
import re
import subprocess
import sys
import types

import pytest

GUIDES_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "guides")
sys.path.insert(0, GUIDES_DIR)
import sync_notebooks  # noqa: E402

from keras_matta import _startup  # noqa: E402

GUIDES = sync_notebooks.guide_paths()


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("path", GUIDES, ids=os.path.basename)
def test_notebook_and_markdown_are_in_sync_with_their_guide(path):
    target = sync_notebooks.notebook_path(path)
    assert os.path.exists(target), f"run `python guides/sync_notebooks.py` to create {target}"
    notebook = sync_notebooks.notebook_for(path, sync_notebooks.read_notebook(path))
    with open(target) as f:
        assert f.read() == sync_notebooks.render(notebook), (
            f"{target} is stale: run `python guides/sync_notebooks.py`"
        )
    stale = sync_notebooks.write_markdown(notebook, path, check=True)
    assert not stale, f"{stale} stale: run `python guides/sync_notebooks.py`"


@pytest.mark.backend_agnostic
def test_notebook_cells_follow_the_guide():
    notebook = sync_notebooks.notebook_for(GUIDES[0])
    kinds = [cell["cell_type"] for cell in notebook["cells"]]
    assert kinds[0] == "markdown" and "colab-badge.svg" in "".join(notebook["cells"][0]["source"])
    assert "code" in kinds and kinds.count("markdown") > 1


# Each guide is backend-agnostic; CI smoke-runs each on one backend (`runs_on`), spread so the three
# backends' pytest processes finish together. The distributed guide runs on JAX: most of it
# (DataParallel, ModelParallel with Shampoo's layouts on 8 simulated CPU devices) runs only
# there, with the scheduler flag its first cell sets (issue #19); its TensorFlow section,
# MirroredStrategy with MatTA and Shampoo, is tested in tests/distribution/tf_distribution_test.py.
SMOKE_BACKEND = {
    "distributed_training.py": "jax",
    "gpt2_medium_matta.py": "torch",
    "getting_started.py": "jax",
    "shampoo.py": "jax",
    "majority_kernels.py": "torch",
    "matta_language_models.py": "torch",
}


def _student_width_is_gpt2_medium(stdout):
    # The GPT-2 Medium guide's TA, grown around the pretrained model, gives it back at the
    # Student width (to float tolerance).
    difference = float(stdout.split("logit difference: ")[1].split()[0])
    assert difference < 1e-4, stdout[-3000:]


# What a guide's smoke run must print, beyond exiting cleanly.
SMOKE_OUTPUT_CHECKS = {"gpt2_medium_matta.py": _student_width_is_gpt2_medium}


@pytest.mark.backend_agnostic
def test_every_guide_has_a_smoke_backend():
    assert sorted(SMOKE_BACKEND) == sorted(os.path.basename(path) for path in GUIDES)


@pytest.mark.slow
@pytest.mark.parametrize("path", [
    pytest.param(path, marks=pytest.mark.runs_on(SMOKE_BACKEND.get(os.path.basename(path))))
    for path in GUIDES], ids=os.path.basename)
def test_guide_runs_in_smoke_mode(path, tmp_path):
    env = dict(os.environ, KERAS_MATTA_SMOKE="1", MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3")
    # The guide's first cell sets the scheduler flag on JAX itself, as for a notebook user.
    env["XLA_FLAGS"] = " ".join(flag for flag in env.get("XLA_FLAGS", "").split()
                                if _startup.JAX_XLA_FLAG not in flag)
    result = subprocess.run(
        [sys.executable, path], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    SMOKE_OUTPUT_CHECKS.get(os.path.basename(path), lambda stdout: None)(result.stdout)


def _setup_environ(path, environ):
    """Runs a guide's code up to its first import of Keras (or of a package that imports it)
    with `environ` as os.environ, pip faked; returns os.environ as that code leaves it."""
    cells = sync_notebooks.notebook_for(path)["cells"]
    code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    code = code[:re.search(r"^(import|from) keras", code, re.M).start()]
    fake_subprocess = types.SimpleNamespace(run=lambda *args, **kwargs: None)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        code = code.replace("import subprocess\n", "")
        exec(compile(code, path, "exec"), {"subprocess": fake_subprocess})
        return dict(os.environ)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("path", GUIDES, ids=os.path.basename)
def test_setup_turns_off_the_concurrent_cpu_scheduler_for_jax_only(path):
    """Issue #19: on JAX the set-up cells add the flag to XLA_FLAGS before Keras (and JAX) is
    imported, keeping the flags already set; other backends get no XLA flags (TensorFlow's XLA
    aborts on flags its version lacks); a scheduler setting of the user's own is kept."""
    flag = f"{_startup.JAX_XLA_FLAG}=false"
    environ = _setup_environ(path, {"KERAS_BACKEND": "jax"})
    assert flag in environ["XLA_FLAGS"].split()
    if "host_platform_device_count" in open(path).read():  # simulated CPU devices
        assert "--xla_force_host_platform_device_count=8" in environ["XLA_FLAGS"].split()
    # Run again, as "run all" twice does: nothing added twice.
    assert _setup_environ(path, environ)["XLA_FLAGS"] == environ["XLA_FLAGS"]
    flags = _setup_environ(path, {"XLA_FLAGS": "--xla_dump_to=/tmp/x"})["XLA_FLAGS"].split()
    assert flags[0] == "--xla_dump_to=/tmp/x" and flags.count(flag) == 1  # jax is the default
    own = f"{_startup.JAX_XLA_FLAG}=true"
    assert flag not in _setup_environ(path, {"KERAS_BACKEND": "jax", "XLA_FLAGS": own})[
        "XLA_FLAGS"]
    for backend in ("tensorflow", "torch"):
        flags = _setup_environ(path, {"KERAS_BACKEND": backend}).get("XLA_FLAGS", "")
        assert "scheduler" not in flags
