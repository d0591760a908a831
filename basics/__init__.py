"""Shared basics of every package: the user-error type, atomic file writes, registries, dataclass options
(flags and YAML), command-line plumbing and small statistics. Imports nothing of the project."""
