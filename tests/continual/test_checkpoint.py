"""continual.checkpoint: a chunked run's whole state survives a save/restore bit for bit.

One small experiment and its jitted ``init`` / ``run_interval`` are shared by the module: compiling
dominates the cost on a small CPU.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from continual.checkpoint import Checkpointer, CheckpointError
from continual.loop import schedule_entry
from continual.runner import run_keys
from experiments.kinds.classifier import ClassifierConfig as Config
from experiments.registry import build
from tasks.schedule import parse

CFG = Config(dataset="synthetic", family="permuted", num_tasks=2, hidden=(8,), steps_per_task=10,
             log_every=5, batch_size=8, seeds=2, eval_examples=16, probe_examples=8)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exp():
    return build(CFG)


@pytest.fixture(scope="module")
def init(exp):
    return jax.jit(jax.vmap(exp.train.init, in_axes=(0, 0, None, None)))


@pytest.fixture(scope="module")
def run_interval(exp):
    return jax.jit(jax.vmap(exp.train.run_interval, in_axes=(0, None, 0, None, None)))


@pytest.fixture(scope="module")
def carry(exp, init):
    carry, _ = init(run_keys([0, 1]), exp.hparams, exp.tasks.data, exp.tasks.params)
    return carry


@pytest.fixture(scope="module")
def abstract(exp, init):
    return jax.eval_shape(init, run_keys([0, 1]), exp.hparams, exp.tasks.data,
                          exp.tasks.params)[0]


def _comparable(x):
    x = jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    return np.asarray(jax.device_get(x))


def _assert_bit_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        name = jax.tree_util.keystr(path)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(_comparable(x), _comparable(y), err_msg=name, strict=True)


def _assert_logs_equal(a, b, path="logs"):
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            _assert_logs_equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_logs_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=path, strict=True)
    else:
        assert a == b, path


NASTY_LOGS = {
    "eval_acc": np.linspace(0, 1, 12, dtype=np.float32).reshape(2, 2, 3),
    "dormant_frac@0.025": {"hidden/0": np.array([0.5, 0.25], np.float32),
                           "hidden.1": np.array([[1, 2]], np.int8)},
    "per_task": [{"loss": np.float64(0.125), "R": np.eye(2, dtype=np.float16)},
                 {"loss": np.float64(np.nan), "R": np.zeros((0, 2), np.float32)}],
    "a/b.c@d": ("tuple", 3, 2.5, True, None, np.bool_(True), np.arange(3, dtype=np.uint64)),
    "": [],
    "empty": {},
    7: np.array(["x", "yz"]),
}


def test_realistic_state_round_trips_bit_identically_and_runs_the_same(
        tmp_path, exp, carry, abstract, run_interval):
    ck = Checkpointer(tmp_path / "ckpt", fingerprint="f" * 64)
    assert ck.latest_step() is None
    ck.save(4, carry, {"logs0": {"eval_acc": np.ones((2, 2), np.float32)}})
    assert ck.latest_step() == 4

    position, restored, logs = Checkpointer(tmp_path / "ckpt", fingerprint="f" * 64).restore(
        None, abstract)
    assert position == 4
    _assert_bit_identical(carry, restored)
    # The optax state comes back as its NamedTuples, the params as nnx.State, the key typed.
    assert type(restored.state.opt_state[0]) is type(carry.state.opt_state[0])
    assert type(restored.state.params) is type(carry.state.params)
    assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(restored))
    _assert_logs_equal(logs, {"logs0": {"eval_acc": np.ones((2, 2), np.float32)}})

    # The first interval of task 1: a switch, so the boundary hooks run too.
    entry = schedule_entry(parse("sequential", 2, 1), 1)
    args = (entry, exp.hparams, exp.tasks.data, exp.tasks.params)
    _assert_bit_identical(run_interval(carry, *args), run_interval(restored, *args))


def test_restore_accepts_the_live_state_as_abstract(tmp_path, carry):
    ck = Checkpointer(tmp_path)
    ck.save(0, carry, None)
    position, restored, logs = ck.restore(0, carry)
    assert position == 0 and logs is None
    _assert_bit_identical(carry, restored)


def test_host_logs_with_nasty_keys_round_trip_exactly(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.save(1, {"w": jnp.arange(3.0)}, NASTY_LOGS)
    _, _, logs = ck.restore(1, {"w": jax.ShapeDtypeStruct((3,), jnp.float32)})
    _assert_logs_equal(logs, NASTY_LOGS)


def test_host_logs_of_unsupported_type_are_refused_with_the_path(tmp_path):
    ck = Checkpointer(tmp_path)
    with pytest.raises(TypeError, match=r"host_logs\['a'\]\[1\].*object"):
        ck.save(0, {}, {"a": [np.ones(1), np.array([None, 1], dtype=object)]})
    assert ck.latest_step() is None


def test_keep_keeps_only_the_last_positions(tmp_path):
    ck = Checkpointer(tmp_path, keep=2)
    for position in range(5):
        ck.save(position, {"w": jnp.full(2, float(position))}, [np.int32(position)])
    assert ck.all_steps() == [3, 4] and ck.latest_step() == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "4"]
    position, state, logs = ck.restore(3, {"w": jax.ShapeDtypeStruct((2,), jnp.float32)})
    assert position == 3 and logs == [np.int32(3)]
    np.testing.assert_array_equal(state["w"], [3.0, 3.0])


def test_saving_a_position_not_after_the_latest_raises(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.save(2, {"w": jnp.zeros(1)}, None)
    with pytest.raises(CheckpointError, match="position 2 .* latest saved position 2"):
        ck.save(2, {"w": jnp.zeros(1)}, None)
    with pytest.raises(ValueError, match="position must be an int >= 0"):
        ck.save(-1, {"w": jnp.zeros(1)}, None)


def test_no_checkpoint_means_latest_step_none_and_restore_raises(tmp_path):
    ck = Checkpointer(tmp_path / "new")
    assert ck.latest_step() is None
    with pytest.raises(CheckpointError, match="no checkpoint to restore in .*new"):
        ck.restore(None, {})
    ck.save(0, {"w": jnp.zeros(1)}, None)
    with pytest.raises(CheckpointError, match=r"no checkpoint at position 5 .* saved positions: \[0\]"):
        ck.restore(5, {"w": jax.ShapeDtypeStruct((1,), jnp.float32)})


def test_a_different_fingerprint_raises_showing_both(tmp_path):
    Checkpointer(tmp_path, fingerprint="0123456789abcdef" * 4).save(0, {"w": jnp.zeros(1)}, None)
    with pytest.raises(CheckpointError, match=r"different configuration \(fingerprint "
                                              r"0123456789ab, this run has fedcba987654\)"):
        Checkpointer(tmp_path, fingerprint="fedcba9876543210" * 4).restore(
            None, {"w": jax.ShapeDtypeStruct((1,), jnp.float32)})


def _corrupt_meta(step: Path):
    (step / "meta" / "metadata").write_text('{"format_version": 1, "fingerpr')


def _corrupt_arrays(step: Path):
    for f in (step / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_bytes(path: Path):
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 4):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _garble_array_data(step: Path):
    # The largest file holds array data: a flipped byte there still decodes, but must not pass.
    _flip_bytes(max((f for f in (step / "state").rglob("*") if f.is_file()),
                    key=lambda f: f.stat().st_size))


def _corrupt_host_logs(step: Path):
    (step / "host_logs" / "arrays.npz").write_bytes(b"PK\x03\x04garbage")


def _garble_host_log_tree(step: Path):
    path = step / "host_logs" / "tree.json"
    path.write_text(path.read_text().replace('"a1"', '"a2"', 1))


@pytest.mark.parametrize("corrupt", [_corrupt_meta, _corrupt_arrays, _garble_array_data,
                                     _corrupt_host_logs, _garble_host_log_tree])
def test_a_corrupt_latest_checkpoint_raises_naming_the_path(tmp_path, corrupt, carry, abstract):
    ck = Checkpointer(tmp_path)
    ck.save(0, carry, NASTY_LOGS)
    ck.save(1, carry, NASTY_LOGS)
    corrupt(tmp_path / "1")
    with pytest.raises(CheckpointError, match=rf"{tmp_path / '1'} is unreadable or corrupt: "
                                              r".*delete .* to resume from 0"):
        Checkpointer(tmp_path).restore(None, abstract)
    # The older one is still fine.
    _assert_bit_identical(carry, Checkpointer(tmp_path).restore(0, abstract)[1])


def test_an_incompatible_abstract_state_raises_naming_the_leaf(tmp_path, exp, carry):
    ck = Checkpointer(tmp_path)
    ck.save(0, carry, None)
    wider = build(dataclasses.replace(CFG, hidden=(16,)))
    abstract = jax.eval_shape(jax.vmap(wider.train.init, in_axes=(0, 0, None, None)),
                              run_keys([0, 1]), wider.hparams, wider.tasks.data,
                              wider.tasks.params)[0]
    with pytest.raises(CheckpointError, match=r"\.state\.params\['hidden'\]\[0\]\['bias'\]"
                                              r"\.value: saved float32\[2, 8\], expected "
                                              r"float32\[2, 16\]"):
        ck.restore(0, abstract)
    with pytest.raises(CheckpointError, match=r"leaf 0 is \.state.* in the checkpoint but "
                                              r"\[0\]\.state.* in the abstract state"):
        ck.restore(0, (carry, jnp.zeros(1)))


def test_a_different_number_of_leaves_raises_naming_the_first_unmatched(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.save(0, {"a": jnp.zeros(1), "b": jnp.zeros(2)}, None)
    f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
    with pytest.raises(CheckpointError, match=r"it has 2 leaves, the abstract state 3 \(first "
                                              r"unmatched: \['c'\]\)"):
        ck.restore(0, {"a": f32(1), "b": f32(2), "c": f32(3)})
    with pytest.raises(CheckpointError, match=r"\['b'\]: saved float32\[2\], expected int32\[2\]"):
        ck.restore(0, {"a": f32(1), "b": jax.ShapeDtypeStruct((2,), jnp.int32)})


def test_a_run_killed_mid_save_leaves_the_previous_checkpoint_restorable(tmp_path):
    child = textwrap.dedent("""
        import os, signal, sys
        import jax.numpy as jnp, numpy as np
        from continual import checkpoint as ck
        c = ck.Checkpointer(sys.argv[1])
        c.save(1, {"w": jnp.ones(3)}, {"n": np.arange(2)})
        write = ck._write_host_logs
        def write_then_die(*args):
            write(*args)
            os.kill(os.getpid(), signal.SIGKILL)
        ck._write_host_logs = write_then_die
        c.save(2, {"w": jnp.full(3, 2.0)}, {"n": np.arange(3)})
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert any("tmp" in p.name for p in tmp_path.iterdir())  # it did die mid-save

    ck = Checkpointer(tmp_path)
    assert ck.latest_step() == 1
    position, state, logs = ck.restore(None, {"w": jax.ShapeDtypeStruct((3,), jnp.float32)})
    assert position == 1
    np.testing.assert_array_equal(state["w"], np.ones(3, np.float32))
    _assert_logs_equal(logs, {"n": np.arange(2)})
    ck.save(2, {"w": jnp.full(3, 2.0)}, None)  # resuming and saving again works
    assert ck.all_steps() == [1, 2]


def test_sharded_runs_restore_onto_the_abstract_states_sharding(tmp_path):
    child = textwrap.dedent("""
        import sys
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from continual.checkpoint import Checkpointer
        sharded = NamedSharding(Mesh(np.array(jax.devices()), ("runs",)), P("runs"))
        state = {"w": jax.device_put(jnp.arange(8.0).reshape(4, 2), sharded),
                 "key": jax.device_put(jax.random.split(jax.random.key(0), 4), sharded)}
        ck = Checkpointer(sys.argv[1])
        ck.save(0, state, None)
        _, live, _ = ck.restore(0, state)
        assert all(x.sharding == sharded for x in jax.tree.leaves(live)), live
        _, plain, _ = ck.restore(0, jax.eval_shape(lambda s: s, state))
        for restored in (live, plain):
            assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(restored))
            np.testing.assert_array_equal(restored["w"], state["w"])
            np.testing.assert_array_equal(jax.random.key_data(restored["key"]),
                                          jax.random.key_data(state["key"]))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
               + " --xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", child, str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
