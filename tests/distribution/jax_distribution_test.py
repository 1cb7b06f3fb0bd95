"""keras.distribution on JAX: DataParallel, ModelParallel (`matta_layout_map`), Shampoo's state."""

import json
import os

import keras
import pytest
from distribution import scenarios
from helpers import run_python

import keras_matta
from keras_matta import distribution as distribution_lib

BACKEND = keras.backend.backend()
pytestmark = pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution runs on JAX only")
HERE = os.path.dirname(os.path.abspath(__file__))


def mesh(shape=(2, 4), names=("batch", "model")):
    # Device names only: no layout is materialised by these tests.
    return keras.distribution.DeviceMesh(shape, names, [f"cpu:{i}" for i in range(8)])


def axes(layout_map, path):
    layout = layout_map[path]
    return None if layout is None else tuple(layout.axes)


# === Layout rules (no devices needed) ===


def test_layout_map_splits_mat_layers_along_their_nested_dimension():
    layout_map = distribution_lib.matta_layout_map(
        mesh(), column_parallel=["hidden"], row_parallel=["logits"])
    assert axes(layout_map, "ta/hidden/kernel") == (None, "model")
    assert axes(layout_map, "ta/hidden/bias") == ("model",)
    assert axes(layout_map, "ta/logits/kernel") == ("model", None)
    assert axes(layout_map, "ta/logits/bias") is None  # added after the all-reduce: replicated
    assert axes(layout_map, "ta/hidden_2/kernel") is None  # names match in full
    # Optimizer state paths use "_" for "/": the kernel entries never match them.
    assert axes(layout_map, "shampoo/ta_hidden_kernel_momentum") is None


def test_layout_map_defaults_cover_transformer_blocks():
    layout_map = distribution_lib.matta_layout_map(mesh())
    block = "enc/block_0"
    assert axes(layout_map, f"{block}/block_0_ffn_intermediate/kernel") == (None, "model")
    assert axes(layout_map, f"{block}/block_0_ffn_intermediate/bias") == ("model",)
    assert axes(layout_map, f"{block}/block_0_ffn_output/kernel") == ("model", None)
    assert axes(layout_map, f"{block}/block_0_attention/query_kernel") == (None, "model", None)
    assert axes(layout_map, f"{block}/block_0_attention/value_bias") == ("model", None)
    assert axes(layout_map, f"{block}/block_0_attention/output_kernel") == ("model", None, None)
    assert axes(layout_map, f"{block}/block_0_attention/output_bias") is None
    assert axes(layout_map, f"{block}/block_0_ffn_norm/gamma") is None
    # The real variable paths of a MatTransformerBlock are the ones the patterns expect.
    layer = keras_matta.MatTransformerBlock(8, 2, name="block_0")
    layer.build((None, 3, 4))
    sharded = {v.path for v in layer.variables if layout_map[v.path] is not None}
    assert len(sharded) == 10  # q/k/v kernels and biases, output kernel, FFN in (2), FFN out


def test_nested_layouts_from_the_declarations_equal_the_name_patterns():
    layer = keras_matta.MatTransformerBlock(8, 2, name="block_0")
    model = keras.Sequential([keras.Input((3, 4)), layer], name="enc")
    derived = distribution_lib.add_nested_layouts(keras.distribution.LayoutMap(mesh()), model)
    by_name = distribution_lib.matta_layout_map(mesh())
    for variable in model.variables:
        assert axes(derived, variable.path) == axes(by_name, variable.path), variable.path


def test_nested_layouts_cover_majority_copies_and_mlp_heads():
    model = keras.Sequential([
        keras.Input((4,)),
        keras_matta.MatDense(16, majority=3, name="hidden"),
        keras_matta.MatDense(4, nested=False, name="logits"),
    ], name="ta")
    layout_map = distribution_lib.add_nested_layouts(keras.distribution.LayoutMap(mesh()), model)
    assert axes(layout_map, "ta/hidden/kernel") == (None, None, "model")  # (copies, d, units)
    assert axes(layout_map, "ta/hidden/bias") == ("model",)
    assert axes(layout_map, "ta/logits/kernel") == ("model", None)  # reads the nested units
    assert axes(layout_map, "ta/logits/bias") is None
    with pytest.raises(ValueError, match="model_axis"):
        distribution_lib.add_nested_layouts(keras.distribution.LayoutMap(mesh()), model,
                                            model_axis="tensor")


def shampoo_layouts(spread_axis=None, block_size=4, d_in=4, mesh_shape=(2, 4),
                    names=("batch", "model"), precondition_vectors=False):
    ta = keras.Sequential([keras.Input((d_in,)),
                           keras_matta.MatDense(16, activation="relu", name="hidden"),
                           keras_matta.MatDense(4, nested=False, name="logits")], name="ta")
    layout_map = distribution_lib.matta_layout_map(
        mesh(mesh_shape, names), column_parallel=["hidden"], row_parallel=["logits"],
        model_axis=names[-1])
    optimizer = keras_matta.optimizers.Shampoo(
        block_size=block_size, precondition_vectors=precondition_vectors, name="opt")
    distribution_lib.add_shampoo_layouts(layout_map, optimizer, ta, spread_axis=spread_axis)
    return lambda path: axes(layout_map, f"opt/{path}")


def test_shampoo_state_follows_the_blocks_each_device_holds():
    state = shampoo_layouts()
    # Same-shaped state follows its variable, as Adam's slots do.
    assert state("ta_hidden_kernel_momentum") == (None, "model")
    assert state("ta_hidden_kernel_grafting_second_moment") == (None, "model")
    assert state("ta_hidden_bias_momentum") == ("model",)
    # (4, 16) split on columns, blocks 4x4: one block row of 4 blocks, one per model shard.
    for suffix in ("left_statistics", "right_statistics", "left_root", "right_root"):
        assert state(f"ta_hidden_kernel_{suffix}") == ("model", None, None)
    # (16, 4) split on rows: 4 block rows, one per model shard.
    assert state("ta_logits_kernel_left_statistics") == ("model", None, None)
    assert state("ta_logits_bias_momentum") is None


def test_shampoo_state_is_replicated_when_blocks_do_not_align():
    # d_in = 8 > block_size: two block rows, so a device's column shard is not a contiguous
    # range of blocks (blocks are numbered row-major).
    state = shampoo_layouts(d_in=8)
    assert state("ta_hidden_kernel_left_statistics") is None
    assert state("ta_hidden_kernel_momentum") == (None, "model")  # still follows the kernel
    # block_size 8 on a (16, 4) kernel split 4 ways: 4 rows per shard, blocks of 8 rows.
    state = shampoo_layouts(block_size=8)
    assert state("ta_logits_kernel_left_statistics") is None


def test_preconditioned_vectors_state_follows_the_blocks_each_device_holds():
    # The hidden bias (16,) is split 4 ways on "model": blocks of 4 rows, one per shard.
    state = shampoo_layouts(precondition_vectors=True)
    assert state("ta_hidden_bias_left_statistics") == ("model", None, None)
    assert state("ta_hidden_bias_right_root") == ("model", None, None)
    assert state("ta_logits_bias_left_statistics") is None  # (4,): replicated
    # Blocks of 8 rows do not fit a shard's 4 rows.
    assert shampoo_layouts(block_size=8, precondition_vectors=True)(
        "ta_hidden_bias_left_statistics") is None
    assert shampoo_layouts()("ta_hidden_bias_left_statistics") is None  # not preconditioned


def test_spread_axis_splits_the_blocks_of_replicated_variables():
    state = shampoo_layouts(spread_axis="batch", d_in=8)
    # The misaligned hidden kernel's 8 blocks are spread over the 2 batch shards instead.
    assert state("ta_hidden_kernel_left_statistics") == ("batch", None, None)
    # Data parallel only: nothing is split by the model, the blocks go over "batch" when
    # their number divides by its 8 devices.
    ta = keras.Sequential([keras.Input((4,)), keras_matta.MatDense(16, name="hidden"),
                           keras_matta.MatDense(4, nested=False, name="logits")], name="ta")
    for block_size, expected in ((4, None), (2, ("batch", None, None))):
        layout_map = keras.distribution.LayoutMap(mesh((8,), ("batch",)))
        optimizer = keras_matta.optimizers.Shampoo(block_size=block_size, name="opt")
        distribution_lib.add_shampoo_layouts(layout_map, optimizer, ta, spread_axis="batch")
        # (4, 16): 4 blocks of 4x4 (not divisible by 8), or 16 blocks of 2x2.
        assert axes(layout_map, "opt/ta_hidden_kernel_left_root") == expected
        assert axes(layout_map, "opt/ta_hidden_kernel_momentum") is None


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="device_mesh"):
        distribution_lib.matta_layout_map("mesh")
    with pytest.raises(ValueError, match="model_axis.*'tensor'"):
        distribution_lib.matta_layout_map(mesh(), model_axis="tensor")
    with pytest.raises(TypeError, match="column_parallel"):
        distribution_lib.matta_layout_map(mesh(), column_parallel="hidden")
    with pytest.raises(ValueError, match="row_parallel"):
        distribution_lib.matta_layout_map(mesh(), row_parallel=["(unclosed"])
    layout_map = distribution_lib.matta_layout_map(mesh())
    ta = keras.Sequential([keras.Input((4,)), keras_matta.MatDense(8)])
    with pytest.raises(TypeError, match="optimizer.*Adam"):
        distribution_lib.add_shampoo_layouts(layout_map, keras.optimizers.Adam(), ta)
    with pytest.raises(TypeError, match="layout_map"):
        distribution_lib.add_shampoo_layouts({}, keras_matta.optimizers.Shampoo(), ta)
    with pytest.raises(ValueError, match="spread_axis"):
        distribution_lib.add_shampoo_layouts(layout_map, keras_matta.optimizers.Shampoo(), ta,
                                             spread_axis="x")
    built = keras_matta.optimizers.Shampoo()
    built.build(ta.trainable_variables)
    with pytest.raises(ValueError, match="already built"):
        distribution_lib.add_shampoo_layouts(layout_map, built, ta)
    with pytest.raises(ValueError, match="PyTorch backend"):
        distribution_lib.synchronize_gradients(ta)


# === Distributed fit == single-device fit (8 simulated CPU devices) ===

DISTRIBUTED_FIT = """
import os, sys, json
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"  # before jax starts
sys.path.insert(0, {here!r})
import jax, keras, numpy as np
import keras_matta
from keras_matta import distribution as distribution_lib
from scenarios import BATCH, build_matta, make_data, save_result

assert len(jax.devices()) == 8
x, y = make_data()
devices = jax.devices()

def run(name, distribution=None, layout_map=None, spread_axis=None):
    keras.distribution.set_distribution(distribution)
    mat_ta = build_matta(layout_map=layout_map, spread_axis=spread_axis, strategy="all")
    # Batch-end callbacks on the training thread, as multi-device CPU runs need
    # (keras_matta.callbacks.SynchronousCallbacks).
    history = mat_ta.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                         callbacks=[keras_matta.callbacks.SynchronousCallbacks()])
    save_result(os.path.join({out!r}, name + ".npz"), mat_ta, history.history)
    layouts = {{v.path.split("/", 1)[1]: list(getattr(v.value.sharding, "spec", ()))
               for v in mat_ta.model.weights + mat_ta.optimizer.variables}}
    keras.distribution.set_distribution(None)
    return layouts

specs = {{}}
run("single")
run("data_parallel", keras.distribution.DataParallel(devices=devices))
mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
layout_map = distribution_lib.matta_layout_map(mesh, column_parallel=["hidden"],
                                               row_parallel=["logits"])
specs["model_parallel"] = run(
    "model_parallel", keras.distribution.ModelParallel(layout_map=layout_map,
                                                        batch_dim_name="batch"), layout_map)
mesh = keras.distribution.DeviceMesh((4,), ("batch",), devices[:4])
layout_map = keras.distribution.LayoutMap(mesh)
specs["spread"] = run(
    "spread", keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"),
    layout_map, spread_axis="batch")
with open(os.path.join({out!r}, "specs.json"), "w") as f:
    json.dump(specs, f)
"""


# XLA's concurrency-optimized CPU scheduler can stall a step with simulated devices on a
# machine with few cores: a collective waits for a participant the thread pool never schedules
# (JAX 0.10.2 on 2 cores, plain `jax.jit` code too). Without it the runs pass every time, so
# there is no retry: a hang or failure here is real.
SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("jax_distribution"))
    code = DISTRIBUTED_FIT.format(here=HERE, out=out).replace(
        "device_count=8", f"device_count=8 {SCHEDULER_FLAG}")
    run_python(code, backend="jax", timeout=300)
    runs = {name: scenarios.load_result(os.path.join(out, f"{name}.npz"))
            for name in ("single", "data_parallel", "model_parallel", "spread")}
    with open(os.path.join(out, "specs.json")) as f:
        return runs, json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["data_parallel", "model_parallel", "spread"])
def test_distributed_fit_matches_the_single_device_run(distributed_runs, name):
    """8 steps of MatTA (three Students, teacher in the step, Shampoo roots at steps 2, 4, 6,
    8): every logged loss and every weight equals the single-device run."""
    runs, _ = distributed_runs
    scenarios.assert_same_run(runs[name], runs["single"])


@pytest.mark.slow
def test_model_parallel_shards_kernels_and_shampoo_blocks(distributed_runs):
    _, specs = distributed_runs
    layouts = specs["model_parallel"]
    assert layouts["hidden/kernel"] == [None, "model"]
    assert layouts["hidden/bias"] == ["model"]
    assert layouts["logits/kernel"] == ["model", None]
    optimizer = {k.rsplit("/", 1)[-1]: v for k, v in layouts.items()}
    for suffix in ("left_statistics", "right_statistics", "left_root", "right_root"):
        assert optimizer[f"ta_hidden_kernel_{suffix}"] == ["model", None, None]
        assert optimizer[f"ta_logits_kernel_{suffix}"] == ["model", None, None]
    assert optimizer["ta_hidden_kernel_momentum"] == [None, "model"]
    spread = {k.rsplit("/", 1)[-1]: v for k, v in specs["spread"].items()}
    assert spread["ta_hidden_kernel_left_statistics"] == ["batch", None, None]
    assert spread["ta_hidden_kernel_momentum"] in ([], [None, None])
