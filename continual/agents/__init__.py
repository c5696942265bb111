"""RL agents and the loop they share.

* :mod:`continual.agents.base` — the interface: :class:`Agent` (acting, updating, measuring) and
  its :class:`Memory` (what it stores and replays);
* :mod:`continual.agents.loop` — the one RL loop every agent runs (:func:`make_rl_train`);
* :mod:`continual.agents.sac` — Soft Actor-Critic (and goal-conditioned SAC with HER);
* :mod:`continual.agents.crl` — contrastive goal-conditioned RL, with its critic's energies and
  losses in :mod:`continual.agents.contrastive`;
* :mod:`continual.agents.trajectory` — trajectory replay with future-goal relabelling (CRL) and
  hindsight relabelling (HER); :mod:`continual.agents.relabel` — the relabelling offsets;
* :mod:`continual.agents.policy` — the tanh-Gaussian policy head and
  :mod:`continual.agents.optim` — the optimizer steps the actor-critic agents share;
* :mod:`continual.agents.dreamer` — a DreamerV3-style world-model agent with Continual-Dreamer's
  options (Plan2Explore, selective sequence replay): its world model (RSSM, encoder, decoder,
  heads) in :mod:`continual.agents.world_model`, its numerical building blocks (symlog, two-hot,
  unimix, free-nats KL, λ-returns) in :mod:`continual.agents.dreamer_ops`, and its sequence
  replay (chunks of transitions under every :mod:`continual.replay` rule, per-task probe sets)
  in :mod:`continual.agents.sequence`.

A new agent goes here as one module whose builder returns an :class:`Agent`.
"""
from continual.agents.base import Agent, EnvStep, Memory, Rollout, memoryless
from continual.agents.loop import RLSpec, make_rl_train

__all__ = ["Agent", "EnvStep", "Memory", "Rollout", "RLSpec", "make_rl_train", "memoryless"]
