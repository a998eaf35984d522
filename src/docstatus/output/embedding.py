"""Embedders: text to a fixed-length vector. The default is offline and deterministic.

Plug in your own by passing any object with a ``dimension`` and an ``embed``
method (the :class:`Embedder` protocol) to the text processor and the output
store's search.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["Embedder", "HashingEmbedder", "normalise"]

_TOKEN = re.compile(r"\w+", re.UNICODE)


@runtime_checkable
class Embedder(Protocol):
    """Turns a text into a vector of ``dimension`` floats. Must be safe to call from several threads."""

    @property
    def dimension(self) -> int:
        """The length of every vector :meth:`embed` returns."""
        ...

    def embed(self, text: str) -> Sequence[float]:
        """The vector of ``text``."""
        ...


def normalise(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to unit length (a zero vector stays zero)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if norm == 0.0:
        return [0.0] * len(vector)
    return [x / norm for x in vector]


class HashingEmbedder:
    """A bag-of-words vector by the hashing trick: standard library only, no model, deterministic.

    Each lower-cased word is hashed (BLAKE2b, so the result is the same in
    every process, unlike ``hash()``) to one of ``dimension`` slots and a
    sign; counts are damped (``1 + log(count)``) and the vector is
    L2-normalised, so the dot product of two vectors is their cosine
    similarity. Texts without words give the zero vector.
    """

    def __init__(self, dimension: int = 256) -> None:
        if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
            raise ValueError(f"dimension must be a positive integer, got {dimension!r}")
        self._dimension = dimension

    @property
    def dimension(self) -> int:
        """The length of every vector."""
        return self._dimension

    def _slot(self, token: str) -> tuple[int, float]:
        value = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        # The lowest bit picks the sign, so colliding words tend to cancel, not pile up.
        return (value >> 1) % self._dimension, (1.0 if value & 1 else -1.0)

    def embed(self, text: str) -> list[float]:
        """The unit-length vector of ``text`` (all zeros when it has no words)."""
        vector = [0.0] * self._dimension
        for token, count in Counter(_TOKEN.findall(text.lower())).items():
            slot, sign = self._slot(token)
            vector[slot] += sign * (1.0 + math.log(count))
        return normalise(vector)

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimension={self._dimension})"
