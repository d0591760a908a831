"""Multi-task learning core: configs, data, shared encoder + task heads, samplers, trainer, the run directory.

Importing the package does nothing else (no registration, no heavy imports).
"""
