"""Task samplers: decide which task each training batch comes from (every batch holds one task).

A sampler turns the epoch's per-task batch lists into one schedule ``[(task, indices), ...]``.
All randomness comes from the ``torch.Generator`` passed in (seeded per run and epoch).

- ``round-robin``: one batch of each task in turn (tasks in the order given); a task that has
  run out of batches drops out, so every example is seen once per epoch.
- ``proportional``: all batches of all tasks in a random order, so a task's share of steps is
  proportional to its dataset size (MT-DNN).
- ``temperature``: as many steps as all batches together; each step draws a task with
  probability ``p_t ~ n_t^(1/T)`` (n_t = number of examples). T=1 is proportional in
  expectation, T -> inf uniform. A task drawn more often than it has batches cycles through them.

:data:`SAMPLERS` is the one list of samplers: a new one is a function with the signature of
:class:`Sampler` and one ``register`` line. The option parser reads this module to answer
``--help``, so it does not import torch at import time: the samplers that draw random numbers
import it when they run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from basics.errors import UserError
from basics.registry import Registry

Schedule = list[tuple[str, list[int]]]


class Sampler(Protocol):
    def __call__(self, batches: Mapping[str, list[list[int]]], generator: Any, sizes: Mapping[str, int],
                 temperature: float) -> Schedule: ...


def round_robin(batches: Mapping[str, list[list[int]]], generator: Any = None, sizes: Mapping[str, int] | None = None,
                temperature: float = 2.0) -> Schedule:
    queues = {t: list(b) for t, b in batches.items()}
    schedule: Schedule = []
    position = {t: 0 for t in queues}
    while any(position[t] < len(q) for t, q in queues.items()):
        for task, queue in queues.items():
            if position[task] < len(queue):
                schedule.append((task, queue[position[task]]))
                position[task] += 1
    return schedule


def proportional(batches: Mapping[str, list[list[int]]], generator: Any, sizes: Mapping[str, int] | None = None,
                 temperature: float = 2.0) -> Schedule:
    import torch

    flat = [(task, b) for task, task_batches in batches.items() for b in task_batches]
    order = torch.randperm(len(flat), generator=generator).tolist()
    return [flat[i] for i in order]


def temperature_probs(sizes: Mapping[str, int], temperature: float) -> dict[str, float]:
    """p_t = n_t^(1/T) / sum_s n_s^(1/T)."""
    weights = {t: float(n) ** (1.0 / temperature) for t, n in sizes.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def temperature_sampler(batches: Mapping[str, list[list[int]]], generator: Any, sizes: Mapping[str, int],
                        temperature: float) -> Schedule:
    import torch

    tasks = list(batches)
    probs = temperature_probs({t: sizes[t] for t in tasks}, temperature)
    steps = sum(len(b) for b in batches.values())
    draws = torch.multinomial(torch.tensor([probs[t] for t in tasks]), steps, replacement=True, generator=generator)
    position = {t: 0 for t in tasks}
    schedule: Schedule = []
    for k in draws.tolist():
        task = tasks[k]
        task_batches = batches[task]
        schedule.append((task, task_batches[position[task] % len(task_batches)]))
        position[task] += 1
    return schedule


SAMPLERS: Registry[Sampler] = Registry("sampler")
SAMPLERS.register("round-robin", round_robin)
SAMPLERS.register("proportional", proportional)
SAMPLERS.register("temperature", temperature_sampler)


def build_schedule(strategy: str, batches: Mapping[str, list[list[int]]], generator: Any,
                   sizes: Mapping[str, int] | None = None, temp: float = 2.0) -> Schedule:
    """The epoch's schedule from the sampler named ``strategy`` (:data:`SAMPLERS`)."""
    sampler = SAMPLERS.get(strategy)
    empty = [t for t, b in batches.items() if not b]
    if empty:
        raise UserError(f"task(s) {', '.join(empty)} have no training batches")
    if sizes is None:
        sizes = {t: sum(len(b) for b in task_batches) for t, task_batches in batches.items()}
    return sampler(batches, generator, sizes, temp)
