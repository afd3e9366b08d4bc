"""What planned but uncommitted batches have noted, one layer per batch (issue 12).

The router plans batch N+1 while batch N's transaction is still open, so the
routed ledger and the signal store hold the notes of up to two batches at once.
Each batch gets its own layer: a commit makes the oldest layer durable, and an
abort forgets every layer (the router then discards every batch planned after
the aborted one and reads them all again). Lookups see the newest note first.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["PendingBatches"]

V = TypeVar("V")


class PendingBatches(Generic[V]):
    def __init__(self) -> None:
        self._layers: list[dict[str, V]] = []

    def begin(self) -> None:
        """A new batch is being planned: its notes go in a layer of their own."""
        self._layers.append({})

    def get(self, key: str) -> V | None:
        for layer in reversed(self._layers):
            found = layer.get(key)
            if found is not None:
                return found
        return None

    def put(self, key: str, value: V) -> None:
        if not self._layers:  # a caller that plans without ``begin`` (one batch at a time)
            self._layers.append({})
        self._layers[-1][key] = value

    def pop_oldest(self) -> dict[str, V]:
        """The oldest batch's notes, now committed (empty if nothing is pending)."""
        return self._layers.pop(0) if self._layers else {}

    def clear(self) -> None:
        self._layers.clear()
