"""Saves and restores the whole state of a chunked continual run (DESIGN.md, principle 8).

An edge object: the runner calls :meth:`Checkpointer.save` at each chunk boundary and, on start,
:meth:`Checkpointer.restore` if :meth:`Checkpointer.latest_step` is not ``None``.

What a checkpoint step directory ``<dir>/<position>/`` holds (written by orbax's
``CheckpointManager`` into a temporary directory that is renamed when complete, so a run killed
mid-save leaves the previous step intact and the half-written one invisible):

* ``state/`` — the device state as a flat dict ``{"leaf_00000": array, ...}`` of its
  ``tree_flatten`` leaves, typed PRNG keys stored as their ``key_data``. Saving leaves rather than
  the tree itself is deliberate: orbax restores NamedTuples (optax states) and ``nnx.State`` as
  plain dicts unless handed a matching target, and cannot store key arrays at all. On restore the
  leaves are put back into the *caller's* tree structure (``abstract_state``), so the result has
  exactly its types.
* ``meta/metadata`` — JSON: format version, position, fingerprint, and each leaf's path, shape,
  dtype and key implementation, checked against ``abstract_state`` before any array is read.
* ``host_logs/`` — the host logs as ``arrays.npz`` (no pickles) plus ``tree.json`` describing the
  nesting (dict keys stored as JSON strings, so ``"hidden/0"`` or ``"dormant_frac@0.025"`` are
  safe).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import zlib
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

FORMAT_VERSION = 1
_STATE, _META, _LOGS = "state", "meta", "host_logs"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: missing, corrupt, or made by a different run shape/config."""


# --------------------------------------------------------------------------------------------
# Host logs: arbitrary nesting of dicts / lists / tuples / numpy arrays / scalars, saved as one
# .npz of arrays plus a JSON tree. Containers are tagged dicts in the JSON, so a JSON scalar is
# never ambiguous with a container, and dict keys travel as JSON values (any string is safe).
# --------------------------------------------------------------------------------------------

def _encode_logs(obj: Any, arrays: dict[str, np.ndarray], path: str = "host_logs") -> Any:
    # np.float64 and np.str_ subclass float and str: test numpy scalars first to keep dtypes.
    if obj is None or isinstance(obj, (bool, int, float, str)) and not isinstance(obj, np.generic):
        return obj
    if isinstance(obj, dict):
        return {"dict": [[_encode_logs(k, arrays, f"{path} key {k!r}"),
                          _encode_logs(v, arrays, f"{path}[{k!r}]")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        items = [_encode_logs(v, arrays, f"{path}[{i}]") for i, v in enumerate(obj)]
        return {type(obj).__name__: items}
    tag = "npscalar" if isinstance(obj, np.generic) else "array"
    if isinstance(obj, jax.Array):
        if jax.dtypes.issubdtype(obj.dtype, jax.dtypes.prng_key):
            obj = jax.random.key_data(obj)
        obj = jax.device_get(obj)
    if not isinstance(obj, (np.ndarray, np.generic)):
        raise TypeError(f"cannot checkpoint {path}: unsupported type {type(obj).__name__}; "
                        "host logs may hold dicts, lists, tuples, numpy arrays and scalars")
    arr = np.asarray(obj)
    if arr.dtype.hasobject:
        raise TypeError(f"cannot checkpoint {path}: numpy arrays of dtype object are not "
                        "supported (they would need pickle)")
    name = f"a{len(arrays)}"
    arrays[name] = arr
    return {tag: name}


def _decode_logs(node: Any, arrays: Any) -> Any:
    if not isinstance(node, dict):
        return node
    (tag, value), = node.items()
    if tag == "dict":
        return {_decode_logs(k, arrays): _decode_logs(v, arrays) for k, v in value}
    if tag == "list":
        return [_decode_logs(v, arrays) for v in value]
    if tag == "tuple":
        return tuple(_decode_logs(v, arrays) for v in value)
    if tag == "array":
        return arrays[value]
    if tag == "npscalar":
        return arrays[value][()]
    raise ValueError(f"unknown node tag {tag!r} in host log tree")


def _pack_host_logs(host_logs: Any) -> tuple[bytes, bytes]:
    """(npz bytes, JSON tree bytes)."""
    arrays: dict[str, np.ndarray] = {}
    tree = _encode_logs(host_logs, arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue(), json.dumps(tree).encode()


def _unpack_host_logs(npz: bytes, tree: bytes) -> Any:
    with np.load(io.BytesIO(npz), allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    return _decode_logs(json.loads(tree), arrays)


def _write_host_logs(directory: epath.Path, npz: bytes, tree: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "arrays.npz").write_bytes(npz)
    (directory / "tree.json").write_bytes(tree)


class _HostLogsHandler(ocp.CheckpointHandler):
    """Orbax handler for the packed host logs, so they share the step's atomic directory."""

    def save(self, directory: epath.Path, args: "_HostLogsSave"):
        if jax.process_index() == 0:
            _write_host_logs(directory, args.npz, args.tree)

    def restore(self, directory: epath.Path, args: "_HostLogsRestore | None" = None):
        return (directory / "arrays.npz").read_bytes(), (directory / "tree.json").read_bytes()


@ocp.args.register_with_handler(_HostLogsHandler, for_save=True)
@dataclasses.dataclass
class _HostLogsSave(ocp.args.CheckpointArgs):
    npz: bytes
    tree: bytes


@ocp.args.register_with_handler(_HostLogsHandler, for_restore=True)
@dataclasses.dataclass
class _HostLogsRestore(ocp.args.CheckpointArgs):
    pass


# --------------------------------------------------------------------------------------------

def _crc(x: np.ndarray) -> int:
    # Orbax's array files carry no checksum of the data itself: a flipped byte restores silently.
    return zlib.crc32(np.ascontiguousarray(x).reshape(-1).view(np.uint8))


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _leaf_specs(tree: Any) -> tuple[list[dict], list[Any], Any]:
    """(one description per leaf, the leaves, treedef)."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    specs, leaves = [], []
    for path, leaf in with_path:
        if not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
            leaf = np.asarray(leaf)
        specs.append({"path": jax.tree_util.keystr(path), "shape": list(leaf.shape),
                      "dtype": str(leaf.dtype)})
        leaves.append(leaf)
    return specs, leaves, treedef


def _short(a: str, b: str) -> tuple[str, str]:
    n = 12
    if a[:n] != b[:n] or len(a) <= n and len(b) <= n:
        return a[:n] or "<empty>", b[:n] or "<empty>"
    return a or "<empty>", b or "<empty>"


@contextlib.contextmanager
def _quiet():
    """Silences orbax's INFO chatter (absl logging) for the duration of one call."""
    loggers = [logging.getLogger("absl"), logging.getLogger("orbax")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class Checkpointer:
    """Keeps the last ``keep`` checkpoints of one chunked run in ``directory``.

    ``position`` counts completed chunks (e.g. log intervals done overall). ``fingerprint``
    identifies the configuration (e.g. a hash of the resolved config); restoring a checkpoint
    written with another fingerprint raises :class:`CheckpointError`.

    ``save`` returns only once the checkpoint is complete on disk, so the caller may donate or
    overwrite the state right after.
    """

    def __init__(self, directory: str | Path, *, keep: int = 3, fingerprint: str = ""):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an int >= 1, got {keep!r}")
        if not isinstance(fingerprint, str):
            raise TypeError(f"fingerprint must be a str, got {type(fingerprint).__name__}")
        self.directory = Path(directory).absolute()
        self.keep = keep
        self.fingerprint = fingerprint
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False,
            cleanup_tmp_directories=True)  # debris of a run killed mid-save
        with _quiet():
            self._manager = ocp.CheckpointManager(self.directory, options=options)

    # -- queries --------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        """Saved positions, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The highest saved position, or ``None`` when there is no checkpoint."""
        return self._manager.latest_step()

    def _step_dir(self, position: int) -> Path:
        return self.directory / str(position)

    # -- save -----------------------------------------------------------------------------

    def save(self, position: int, state: Any, host_logs: Any) -> None:
        """Writes ``state`` (device pytree) and ``host_logs`` (host pytree) at ``position``."""
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)) \
                or position < 0:
            raise ValueError(f"position must be an int >= 0, got {position!r}")
        position = int(position)
        latest = self.latest_step()
        if latest is not None and position <= latest:
            raise CheckpointError(
                f"cannot save position {position} in {self.directory}: it is not after the "
                f"latest saved position {latest} (saved: {self.all_steps()})")
        npz, tree = _pack_host_logs(host_logs)
        specs, leaves, _ = _leaf_specs(state)
        flat = {}
        for i, (spec, leaf) in enumerate(zip(specs, leaves)):
            if _is_key(leaf):
                spec["key_impl"] = str(jax.random.key_impl(leaf))
                leaf = jax.random.key_data(leaf)
            if leaf.size == 0:  # orbax cannot save zero-size arrays; the spec rebuilds it
                spec["empty"] = True
                continue
            if getattr(leaf, "is_fully_addressable", True):
                # One transfer serves both the checksum and orbax (which accepts numpy).
                leaf = np.asarray(jax.device_get(leaf))
                spec["crc32"] = _crc(leaf)
            flat[f"leaf_{i:05d}"] = leaf
        meta = {"format_version": FORMAT_VERSION, "position": position,
                "fingerprint": self.fingerprint, "leaves": specs,
                "host_logs_crc32": [zlib.crc32(npz), zlib.crc32(tree)]}
        items = {_META: ocp.args.JsonSave(meta), _LOGS: _HostLogsSave(npz, tree)}
        if flat:  # orbax refuses an empty tree
            items[_STATE] = ocp.args.StandardSave(flat)
        with _quiet():
            self._manager.save(position, args=ocp.args.Composite(**items), force=True)
            self._manager.wait_until_finished()

    # -- restore --------------------------------------------------------------------------

    def check(self, position: int | None = None) -> int:
        """Raises :class:`CheckpointError` unless the checkpoint at ``position`` (the latest when
        ``None``) is readable, of this format and of this fingerprint; returns its position.
        Reads the metadata only: a caller checks before trusting what a position means."""
        position, _, _ = self._meta(position)
        return position

    def _meta(self, position: int | None) -> tuple[int, dict, Callable]:
        """(position, checked metadata, how to report the step as corrupt)."""
        if position is None:
            position = self.latest_step()
            if position is None:
                raise CheckpointError(f"no checkpoint to restore in {self.directory}")
        position = int(position)
        steps = self.all_steps()
        if position not in steps:
            raise CheckpointError(f"no checkpoint at position {position} in {self.directory}; "
                                  f"saved positions: {steps or 'none'}")
        step_dir = self._step_dir(position)
        older = [s for s in steps if s < position]
        hint = (f" (older checkpoints exist at {older}: delete {step_dir} to resume from "
                f"{older[-1]})" if older else "")

        def corrupt(err: Exception) -> CheckpointError:
            return CheckpointError(f"checkpoint {step_dir} is unreadable or corrupt: "
                                   f"{type(err).__name__}: {err}{hint}")

        with _quiet():
            try:
                meta = self._manager.restore(
                    position, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]
                if not all(isinstance(spec, dict) and {"path", "shape", "dtype"} <= spec.keys()
                           for spec in meta["leaves"]):
                    raise ValueError("malformed leaf list in meta/metadata")
                saved_fp = meta["fingerprint"]
            except Exception as err:  # noqa: BLE001 - any failure means unusable
                raise corrupt(err) from err
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {step_dir} has format version {meta.get('format_version')!r}; "
                f"this code reads version {FORMAT_VERSION}")
        if saved_fp != self.fingerprint:
            mine, theirs = _short(self.fingerprint, saved_fp)
            raise CheckpointError(
                f"checkpoint {step_dir} was made with a different configuration "
                f"(fingerprint {theirs}, this run has {mine}); use another checkpoint "
                "directory or the original configuration")
        return position, meta, corrupt

    def restore(self, position: int | None, abstract_state: Any) -> tuple[int, Any, Any]:
        """Returns ``(position, state, host_logs)`` of the checkpoint at ``position``
        (the latest when ``None``).

        ``abstract_state`` gives the structure, shapes and dtypes to restore into: the live
        state, or ``jax.eval_shape`` of the function that makes it. The result has its exact
        tree structure (NamedTuples, ``nnx.State``, typed keys); arrays land on the leaves'
        ``sharding`` where it is given, else on the default device.
        """
        position, meta, corrupt = self._meta(position)
        saved = meta["leaves"]
        step_dir = self._step_dir(position)
        with _quiet():
            specs, abstract_leaves, treedef = _leaf_specs(abstract_state)
            self._check_compatible(step_dir, saved, specs)

            targets = {}
            for i, (spec, leaf) in enumerate(zip(specs, abstract_leaves)):
                if saved[i].get("empty"):
                    continue
                sds = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)
                if _is_key(leaf):
                    sds = jax.eval_shape(jax.random.key_data, sds)
                # Without a sharding, orbax hands back numpy for leaves saved from numpy.
                sharding = getattr(leaf, "sharding", None) or jax.sharding.SingleDeviceSharding(
                    jax.local_devices()[0])
                targets[f"leaf_{i:05d}"] = jax.ShapeDtypeStruct(sds.shape, sds.dtype,
                                                                sharding=sharding)
            items = {_LOGS: _HostLogsRestore()}
            if targets:
                items[_STATE] = ocp.args.StandardRestore(targets)
            try:
                out = self._manager.restore(position, args=ocp.args.Composite(**items))
                flat = out[_STATE] if targets else {}
                npz, tree = out[_LOGS]
                if [zlib.crc32(npz), zlib.crc32(tree)] != meta["host_logs_crc32"]:
                    raise ValueError("host logs checksum mismatch")
                host_logs = _unpack_host_logs(npz, tree)
                for i, spec in enumerate(saved):
                    if spec.get("empty"):
                        continue
                    x = flat[f"leaf_{i:05d}"]
                    if "crc32" in spec and getattr(x, "is_fully_addressable", True) \
                            and _crc(np.asarray(jax.device_get(x))) != spec["crc32"]:
                        raise ValueError(f"checksum mismatch in leaf {spec['path']}")
            except Exception as err:  # noqa: BLE001
                raise corrupt(err) from err

        leaves = []
        for i, (spec, want, leaf) in enumerate(zip(saved, specs, abstract_leaves)):
            if spec.get("empty"):
                leaves.append(jnp.zeros(leaf.shape, leaf.dtype))
                continue
            x = flat[f"leaf_{i:05d}"]
            if "key_impl" in spec:
                x = jax.random.wrap_key_data(x, impl=spec["key_impl"])
            if x.dtype != leaf.dtype or tuple(x.shape) != tuple(leaf.shape):
                raise CheckpointError(
                    f"checkpoint {step_dir}: restored leaf {want['path']} is "
                    f"{x.dtype}{list(x.shape)}, expected {leaf.dtype}{list(leaf.shape)}")
            leaves.append(x)
        return position, jax.tree_util.tree_unflatten(treedef, leaves), host_logs

    @staticmethod
    def _check_compatible(step_dir: Path, saved: list[dict], wanted: list[dict]) -> None:
        for i, (s, w) in enumerate(zip(saved, wanted)):
            if s["path"] != w["path"]:
                raise CheckpointError(
                    f"checkpoint {step_dir} does not match the state to restore: leaf {i} is "
                    f"{s['path']} in the checkpoint but {w['path']} in the abstract state")
            if s["shape"] != w["shape"] or s["dtype"] != w["dtype"]:
                raise CheckpointError(
                    f"checkpoint {step_dir} does not match the state to restore at leaf "
                    f"{w['path']}: saved {s['dtype']}{s['shape']}, "
                    f"expected {w['dtype']}{w['shape']}")
        if len(saved) != len(wanted):
            extra = (saved if len(saved) > len(wanted) else wanted)[min(len(saved),
                                                                         len(wanted))]
            raise CheckpointError(
                f"checkpoint {step_dir} does not match the state to restore: it has "
                f"{len(saved)} leaves, the abstract state {len(wanted)} (first unmatched: "
                f"{extra['path']})")

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
