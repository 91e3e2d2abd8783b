"""What the memory service needs from a segment store, whichever engine keeps the segments.

Two stores implement it: ``store.SegmentStore`` (SQLite file or RAM, one vehicle, the default) and
``milvus_store.MilvusSegmentStore`` (a Milvus Lite file, server or cluster, any number of
vehicles). Both answer ``search`` with the node's exact score (``runtime.scoring``): the same
segments in the same order, so a planner cannot tell which one answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from spartan_ros.memory.store import Segment

BACKENDS = ("sqlite", "milvus")


@dataclass(frozen=True, eq=False)
class Found:
    """One ranked segment of an answer; ``segment.vehicle_id`` names the vehicle that saw it."""

    segment: Segment
    score: float


@dataclass(frozen=True, eq=False)
class SearchResult:
    found: list[Found]  # best first
    # Segments whose exact score was computed. The SQLite store scores every segment left after
    # the filters; the Milvus store scores only those its bound could not rule out.
    candidates: int


class Searchable(Protocol):
    """What answers a query: a store, or the node's link to the fleet store."""

    def search(
        self,
        k: int,
        t: np.ndarray | None = None,
        *,
        query_embedding: np.ndarray | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        near: npt.ArrayLike | None = None,
        radius: float | None = None,
        min_score: float | None = None,
        vehicle_id: str | None = None,
    ) -> SearchResult:
        """Top-k for a text feature ``t`` (each segment fused with its own motion) or a ready
        ``query_embedding`` (a request with its own trajectory); filters as in ``ScoreIndex``,
        plus ``vehicle_id`` (None = every vehicle the store holds)."""
        ...


@runtime_checkable
class MemoryBackend(Searchable, Protocol):
    model_hash: str
    embed_dim: int
    vehicle_id: str
    in_memory: bool
    problems: list[str]  # damage found when the store was opened, one sentence each

    def describe(self) -> str:
        """Where the segments live, for log lines ("/data/m.db", "milvus http://...")."""
        ...

    def add(self, segment: Segment) -> int:
        """Store a segment durably; returns its id (increasing per vehicle)."""
        ...

    def add_many(self, segments: list[Segment]) -> list[int]:
        """Store several segments at once (one transaction where the store has them)."""
        ...

    def get_many(self, ids: list[int] | np.ndarray) -> list[Segment]: ...

    def __len__(self) -> int: ...

    def all_ids(self) -> list[int]: ...

    def evict_oldest(self, max_segments: int) -> list[int]:
        """Delete this vehicle's oldest segments beyond ``max_segments``; their ids."""
        ...

    def close(self) -> None: ...
