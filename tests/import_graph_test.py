"""The modules of `keras_matta` import each other without a cycle.

Every import of a `keras_matta` module counts, at module level and inside functions alike: a
function-local import only postpones a cycle to the first call, the modules still depend on each
other. An import is an edge to the module it names: `from keras_matta.data import digits` to the
submodule `keras_matta.data.digits`, `from keras_matta.data import load_task` to the package
`keras_matta.data` (its `__init__`). The parent packages Python initializes on the way are not
edges: every submodule would otherwise form a cycle with the `__init__` that re-exports it.
"""

import ast
import graphlib
import pathlib

import pytest

pytestmark = pytest.mark.backend_agnostic

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_matta"


def module_paths(package_dir):
    """`{module name: path}` of every `.py` file under `package_dir`, packages included."""
    root = package_dir.parent
    paths = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return paths


def imported_modules(path, module, modules):
    """The modules of `modules` that the file `path` (module `module`) imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = module.split(".")
                package = package[: len(package) - node.level + is_package]
                base = ".".join(package + ([base] if base else []))
            # `from package import name`: the submodule if `name` is one, else the package.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import a.b.c` of a non-module: nearest module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph(package_dir):
    """`{module: set of the package's modules it imports}`."""
    paths = module_paths(package_dir)
    return {module: imported_modules(path, module, paths) for module, path in paths.items()}


def find_cycle(graph):
    """One import cycle as `[a, b, ..., a]`, or `None`."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return list(reversed(error.args[1]))  # graphlib lists it against the import direction
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert "keras_matta.layers.mat_dense" in graph and len(graph) > 40  # the walk found it all
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg.a import A\n")
    (package / "a.py").write_text("from pkg.sub import b\n\nA = 1\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def late():\n    from ..a import A\n    return A\n")
    graph = import_graph(package)
    assert graph["pkg"] == {"pkg.a"} and graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.a"}  # relative and inside a function: still an edge
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"pkg.a", "pkg.sub.b"}
    (package / "sub" / "b.py").write_text("def late():\n    return 1\n")
    assert find_cycle(import_graph(package)) is None
