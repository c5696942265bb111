"""How a person runs it: presets, the `plax` CLI, comparisons, reports and plots."""
from experiments.config import PRESETS, Config, ConfigError, from_preset

__all__ = ["PRESETS", "Config", "ConfigError", "from_preset"]
