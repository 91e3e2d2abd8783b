"""Damage and storage failures of a memory file, detected and named.

- **Row checksums.** SQLite has no page checksums: a flipped bit in a feature blob loads silently.
  Every stored segment carries a CRC-32 of its fields (``row_checksum``); a row whose checksum does
  not match at load is skipped, counted and named, never scored.
- **The count sidecar.** ``<memory file>.segments`` (a small JSON file, replaced atomically) records
  how many segments the memory held and its highest id after every write. It lives beside the
  database because the database itself (or its ``-wal``) may be what gets lost: a file that comes
  back with fewer segments, or older ids, than the sidecar recorded is reported with the numbers.
- **Storage errors.** Disk full and read-only storage are named as such (SQLite reports them as
  several codes, and a failed COMMIT has already rolled back), so the log says what to fix.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import struct
import zlib
from dataclasses import dataclass
from typing import Any

SIDECAR_SUFFIX = ".segments"

# sqlite3 primary result codes (the low byte of an extended code).
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 8, 10, 13, 14


def row_checksum(start_ns: int, end_ns: int, frame_count: int, frame_id: str, poses: bytes,
                 video: bytes, pose: bytes, terms: bytes, beta: float,
                 gamma: float) -> int:  # fmt: skip
    """CRC-32 of one stored segment's fields, as an unsigned 32-bit integer."""
    crc = zlib.crc32(struct.pack("<qqq", int(start_ns), int(end_ns), int(frame_count)))
    crc = zlib.crc32(frame_id.encode("utf-8", "surrogatepass") + b"\0", crc)
    for blob in (poses, video, pose, terms):
        crc = zlib.crc32(struct.pack("<q", len(blob)), crc)
        crc = zlib.crc32(blob, crc)
    return zlib.crc32(struct.pack("<dd", float(beta), float(gamma)), crc)


class StorageError(RuntimeError):
    """Writing to the memory file failed; ``kind`` is "disk full", "read-only" or "I/O error"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def storage_kind(exc: BaseException, path: str) -> str:
    """"disk full", "read-only" or "I/O error" for a failed write to ``path``."""
    code = getattr(exc, "sqlite_errorcode", None)
    number = getattr(exc, "errno", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == _SQLITE_FULL or number in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    if primary == _SQLITE_READONLY or number in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "read-only"
    text = str(exc).lower()
    if "disk is full" in text or "no space" in text:
        return "disk full"
    if "readonly" in text or "read-only" in text:
        return "read-only"
    # Disk full often surfaces as a plain I/O error (a -wal that cannot grow): look at the disk.
    folder = os.path.dirname(os.path.abspath(path))
    try:
        st = os.statvfs(folder)
    except OSError:
        return "I/O error"
    if st.f_flag & os.ST_RDONLY or not os.access(folder, os.W_OK) or (
            os.path.exists(path) and not os.access(path, os.W_OK)):
        return "read-only"  # access() also sees immutable files and read-only mounts as root
    if st.f_bavail * st.f_frsize < 1 << 20:
        return "disk full"
    return "I/O error"


def storage_error(exc: BaseException, path: str, what: str) -> StorageError:
    kind = storage_kind(exc, path)
    hint = {"disk full": "free space on that disk; storing resumes by itself",
            "read-only": "the file system or file is read-only; make it writable or point "
                         "memory_path at a writable place",
            "I/O error": "check the disk"}[kind]
    return StorageError(kind, f"{kind}: {what} {path} failed ({exc}); {hint}")


def is_storage_failure(exc: BaseException) -> bool:
    """An error from the storage (not from the data): worth naming as disk full / read-only."""
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        return primary in (_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN) or \
            "disk" in str(exc).lower() or "readonly" in str(exc).lower()
    return False


@dataclass
class Sidecar:
    """What the memory held after its last write: ``segments`` rows, ids up to ``max_id``."""

    segments: int
    max_id: int

    @staticmethod
    def path_for(db_path: str) -> str:
        return db_path + SIDECAR_SUFFIX

    @classmethod
    def read(cls, db_path: str) -> Sidecar | None:
        """The recorded figures, or None when there is no (readable) sidecar."""
        try:
            with open(cls.path_for(db_path), encoding="utf-8") as f:
                doc: Any = json.load(f)
            return cls(int(doc["segments"]), int(doc["max_id"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, db_path: str, fsync: bool) -> None:
        """Replace the sidecar atomically (write a temporary file, then rename it over)."""
        final = self.path_for(db_path)
        tmp = final + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"segments": self.segments, "max_id": self.max_id}, f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, final)

    def shortfall(self, db_path: str, segments: int, max_id: int) -> str | None:
        """A loud sentence when the file holds less than was recorded, else None."""
        if segments >= self.segments and max_id >= self.max_id:
            return None
        return (f"{db_path} holds {segments} segments (ids up to {max_id}) but held "
                f"{self.segments} (ids up to {self.max_id}) when last written: "
                f"{max(self.segments - segments, 0)} segments are lost (the file or its -wal "
                "was removed, truncated or replaced). Storing continues in this file.")
