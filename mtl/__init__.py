"""Multi-task learning core: shared encoder + task heads, samplers, trainer."""
