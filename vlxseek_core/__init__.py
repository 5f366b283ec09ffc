"""vlxseek_core: VLM-FO1 region-referring vision-language inference, no ROS dependency.

Entry points: :class:`vlxseek_core.pipeline.VLXSeek` (``VLXSeek.from_pretrained``), the task list
:data:`TASKS`, and the ``vlxseek`` command line (:mod:`vlxseek_core.cli`).
"""
from .prompts import TASKS as _TASK_SPECS

__version__ = "0.1.0"
TASKS = tuple(_TASK_SPECS)


def __getattr__(name):
    # Import the torch-heavy pipeline only when it is used.
    if name in ("VLXSeek",):
        from .pipeline import VLXSeek
        return VLXSeek
    raise AttributeError(f"module 'vlxseek_core' has no attribute {name!r}")
