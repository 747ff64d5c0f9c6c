"""The ChatUMM task taxonomy: ``TaskName`` and the table ``TASKS`` of every task the stages make."""

from taxonomy.names import TaskName
from taxonomy.tasks import INTERLEAVE_OPS, TASKS, Stage, TaskSpec

__all__ = ["INTERLEAVE_OPS", "TASKS", "Stage", "TaskName", "TaskSpec"]
