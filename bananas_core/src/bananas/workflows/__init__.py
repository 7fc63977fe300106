"""Workflows: chains, groups and chords of jobs whose continuation is written atomically with
the settle of each step, so a crash can neither lose the next step nor create it twice."""

from bananas.workflows.canvas import Chain, Chord, Group, Node, Task, chain, chord, group, task
from bananas.workflows.plan import WorkflowPlan, WorkflowRecord
from bananas.workflows.view import StepInfo, WorkflowInfo

__all__ = [
    "Chain",
    "Chord",
    "Group",
    "Node",
    "StepInfo",
    "Task",
    "WorkflowInfo",
    "WorkflowPlan",
    "WorkflowRecord",
    "chain",
    "chord",
    "group",
    "task",
]
