"""Learner kinds, one module each: its config dataclass (deriving from
:class:`experiments.config.ConfigBase`), its presets and ``build(config) -> Experiment``, gathered
in a :class:`experiments.experiment.Kind` named ``KIND``.

A new kind goes here as ``<kind>.py`` and is registered with one line in
:mod:`experiments.registry`; its learner or agent goes in ``continual/`` (an RL agent implements
:class:`continual.agents.Agent` and reuses :mod:`experiments.kinds.rl` for the environment and
loop fields). Nothing in the CLI, runner, results, checkpoint or report code names a kind.
"""
