"""Durable segment memory (SQLite) with its in-RAM scoring index."""

from spartan_ros.memory.integrity import StorageError
from spartan_ros.memory.store import (
    SCHEMA_VERSION,
    MemoryFileError,
    ModelMismatchError,
    Segment,
    SegmentStore,
)

__all__ = ["SCHEMA_VERSION", "MemoryFileError", "ModelMismatchError", "Segment", "SegmentStore",
           "StorageError"]
