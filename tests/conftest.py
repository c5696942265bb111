"""Test-session settings: `plax` commands run in-process share one XLA compilation cache in a
temporary directory (never the user's ~/.cache), so identical programs compile once."""
import os
import tempfile

os.environ.setdefault("PLAX_COMPILATION_CACHE", tempfile.mkdtemp(prefix="plax-xla-"))
