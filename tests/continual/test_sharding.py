"""Sharding the run axis over devices gives the same numbers as one device (CPU host devices in
a subprocess, since XLA_FLAGS must be set before jax is imported)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from continual.runner import BatchPlan, execute, run_keys, run_mesh
    from experiments.kinds.classifier import ClassifierConfig as Config
    from experiments.registry import build
    from tasks.schedule import parse

    exp = build(Config(dataset="synthetic", family="permuted", num_tasks=2, hidden=(16,),
                       steps_per_task=20, log_every=10, batch_size=16, seeds=3,
                       eval_examples=32, probe_examples=16))
    out = {"devices": len(jax.devices())}
    for mode in ("sweep", "chunked"):
        logs = {}
        # "batched": 2 devices, 1 run per device per batch: 2 batches, the second padded.
        cases = [("one", jax.devices()[:1], None), ("all", jax.devices(), None)]
        if mode == "sweep":  # (chunked batches run the same batch loop)
            cases.append(("batched", jax.devices()[:2], BatchPlan(3, 2, 1)))
        for name, devices, plan in cases:
            logs[name] = execute(exp.train, run_keys([0, 1, 2]), exp.hparams, exp.tasks.data,
                                 exp.tasks.params, parse("sequential", 2, 2), mode=mode,
                                 mesh=run_mesh(devices), plan=plan)
        a = jax.tree.leaves(logs["one"])
        for name in [c[0] for c in cases[1:]]:
            b = jax.tree.leaves(logs[name])
            out[f"{mode} {name}"] = {
                "shapes_equal": [x.shape for x in a] == [y.shape for y in b],
                "max_diff": max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)),
                "runs": int(b[0].shape[0])}
    print(json.dumps(out))
""")


@pytest.mark.slow  # a sharded and an unsharded program compiled
def test_sharded_runs_match_unsharded_with_a_run_count_that_does_not_divide_devices():
    """Also in batches of one run per device on two devices (two batches, the last padded)."""
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
               + " --xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    for case in ("sweep all", "chunked all", "sweep batched"):
        assert out[case]["runs"] == 3  # the padding runs are dropped
        assert out[case]["shapes_equal"]
        assert out[case]["max_diff"] < 1e-5, out
