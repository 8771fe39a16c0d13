"""The training tasks: ``semantic``, ``instances``, ``care`` and ``n2v``.

:mod:`~microzoo.train.tasks.registry` lists them (one entry each: name, configuration class,
module, QC task, what the exported package says); :mod:`~microzoo.train.tasks.skeleton` runs
the steps they share (read, split, train, check, export); each task's own module supplies
only what differs. Importing this package loads no torch.
"""

from microzoo.train.tasks.registry import TASKS, TrainingTask, get_task

__all__ = ["TASKS", "TrainingTask", "get_task"]
