"""What we train on: task sequences as data (supervised streams here; RL environment sources in
:mod:`tasks.envs`, one module per source)."""
from tasks.base import Batch, TaskSequence, task_slice
from tasks.datasets import DATASETS, Dataset, load_dataset, make_dataset
from tasks.supervised import FAMILIES, StreamParams, make_stream

__all__ = ["Batch", "TaskSequence", "task_slice", "DATASETS", "Dataset", "load_dataset",
           "make_dataset", "FAMILIES", "StreamParams", "make_stream"]
