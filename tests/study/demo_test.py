"""`run_demo` refuses what it cannot run before it writes anything."""

import pytest

from keras_matta.study.demo import run_demo


@pytest.mark.backend_agnostic
@pytest.mark.parametrize("methods", [(), ("majority", "distilled")])
def test_bad_methods_are_refused_by_name_before_any_work(methods, tmp_path):
    output_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="`methods` must be a non-empty subset of"):
        run_demo(tasks=("digits",), mode="quick", output_dir=output_dir, methods=methods)
    assert not output_dir.exists()
