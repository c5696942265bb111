"""Test-session settings.

Programs compiled during the session go to XLA's persistent compilation cache in a temporary
directory (never the user's ~/.cache): the HalfCheetah RL loop, CLI and pinned-output tests
(all ``slow``: the physics compiles for minutes on 2 cores) build the same tiny program
(``RL_TINY``), and the later ones reuse the first's compilation.
"""
import os
import tempfile

import pytest

# The tests are compile-bound (tiny programs, compiled once, run for a few steps): XLA's CPU
# backend at LLVM optimisation level 1 compiles them faster (test_sac.py: 24 s → 18 s) and
# computes the same HLO (the toy SAC loop's logs agreed with the default level to 6e-8). Level 0
# was faster still (14 s) but turned that loop's environment values non-finite, so not that.
# Set before jax is imported; subprocesses inherit it. Benchmarks and user runs keep the
# default level.
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                  "--xla_backend_optimization_level=1"]))
os.environ.setdefault("PLAX_COMPILATION_CACHE", tempfile.mkdtemp(prefix="plax-xla-"))

from experiments.cli import enable_compilation_cache  # noqa: E402

enable_compilation_cache()

# A tiny cheetah-quick: 2 tasks × 2 log points, 4 envs, 6-step episodes, hidden 8, 2 seeds.
RL_TINY = dict(num_envs=4, env_steps_per_task=32, log_every=16, episode_length=6, eval_envs=2,
               eval_length=6, batch_size=8, min_replay=8, replay_capacity=64, hidden=(8,),
               seeds=2, probe_examples=8, val_every=3, mode="sweep",
               metrics="dormant,weight_sv")


@pytest.fixture(scope="session")
def rl_tiny() -> dict:
    """Overrides of the ``cheetah-quick`` preset shared by the RL loop and CLI tests."""
    return dict(RL_TINY)
