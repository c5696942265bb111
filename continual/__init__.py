"""How we train: learners, the continual loop, replay buffers, execution and checkpoints."""
from continual.classifier import Learner, TrainState, make_classifier
from continual.interventions import RESETS, InterventionSpec, make_intervention
from continual.loop import LoopSpec, Train, make_train
from continual.optimizers import OPTIMIZERS, HParams, make_optimizer
from continual.replay import make_buffer
from continual.runner import MODES, execute, run_keys, run_mesh

__all__ = ["Learner", "TrainState", "make_classifier", "RESETS", "InterventionSpec",
           "make_intervention", "LoopSpec", "Train", "make_train", "OPTIMIZERS", "HParams",
           "make_optimizer", "make_buffer", "MODES", "execute", "run_keys", "run_mesh"]
