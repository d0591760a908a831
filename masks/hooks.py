"""What every set of gates that lives as hooks on a model shares: detaching them, and use as a context manager."""

from __future__ import annotations

from typing import Self

from torch.utils.hooks import RemovableHandle


class HookedGates:
    """Base of :class:`masks.gates.Gates`, :class:`masks.layer_gates.LayerGates` and
    :class:`masks.hidden_gates.HiddenGates`: subclasses keep their hook handles in ``_handles``."""

    _handles: list[RemovableHandle]

    def remove(self) -> None:
        """Detach all hooks; the model is ungated afterwards. Safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
