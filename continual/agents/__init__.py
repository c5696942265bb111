"""RL agents and the loop they share.

* :mod:`continual.agents.base` — the interface: :class:`Agent` (acting, updating, measuring) and
  its :class:`Memory` (what it stores and replays);
* :mod:`continual.agents.loop` — the one RL loop every agent runs (:func:`make_rl_train`);
* :mod:`continual.agents.sac` — Soft Actor-Critic;
* :mod:`continual.agents.contrastive` — the contrastive critic of goal-conditioned RL (CRL):
  energies and losses; :mod:`continual.agents.relabel` — future-goal relabelling offsets. (The
  CRL agent that uses them is not built yet.)

A new agent goes here as one module whose builder returns an :class:`Agent`.
"""
from continual.agents.base import Agent, EnvStep, Memory, Rollout
from continual.agents.loop import RLSpec, make_rl_train

__all__ = ["Agent", "EnvStep", "Memory", "Rollout", "RLSpec", "make_rl_train"]
