"""One engine interface for every model (detector, landmarks, encoder) and every backend.

Pre- and post-processing live beside each model (edge/vision, edge/motion), never here:
an engine only maps named input arrays to named output arrays.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | None, ...]   # None marks a dynamic dimension (usually the batch)
    dtype: np.dtype


class Engine(ABC):
    """A compiled model. `run` is not thread-safe; give each thread its own engine."""

    backend: str = "?"

    @property
    @abstractmethod
    def inputs(self) -> list[TensorSpec]: ...

    @property
    @abstractmethod
    def outputs(self) -> list[TensorSpec]: ...

    @property
    def max_batch(self) -> int:
        """Largest batch `run` accepts in one call (1 for a fixed-batch graph)."""
        dim = self.inputs[0].shape[0]
        return 1 if dim == 1 else (dim or 64)

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Feeds and results are host numpy arrays keyed by tensor name."""

    def run_batched(self, name: str, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run a single-input model over any number of items, in chunks of `max_batch`."""
        if len(batch) == 0:
            return {o.name: np.zeros((0,) + tuple(d or 0 for d in o.shape[1:]), o.dtype) for o in self.outputs}
        step = self.max_batch
        parts = [self.run({name: batch[i:i + step]}) for i in range(0, len(batch), step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def warm_up(self) -> None:
        """One run on zeros (dynamic dimensions as 1), so that the first real frame does not pay for
        memory allocation and kernel selection (about a second on a 2-core CPU)."""
        self.run({i.name: np.zeros(tuple(d or 1 for d in i.shape), i.dtype) for i in self.inputs})

    def close(self) -> None:
        """Release backend resources."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
