"""Checksums: a file's SHA-256 (a source told apart by its content) and the order-independent
row checksum ``--verify`` compares between a source and the target."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_expr(column_sql: str) -> str:
    """The SQL expression :class:`RowHash` expects for one column."""
    return f"iif({column_sql} IS NULL, NULL, hex({column_sql}))"


class RowHash:
    """Order-independent checksum of rows: the sum of each row's SHA-256 prefix, mod 2^64.

    Registered as the SQL aggregate ``farm_merge_rowhash(col, ...)``.  Callers pass each
    column through :func:`hash_expr`, so a value reads the same whichever affinity
    stored it (``5`` and ``'5'`` agree) and text that is not valid UTF-8 still hashes.
    """

    def __init__(self) -> None:
        self.total = 0
        self.rows = 0

    def step(self, *values) -> None:
        raw = "\x1f".join("\x00" if v is None else v for v in values).encode()
        self.total = (self.total + int.from_bytes(hashlib.sha256(raw).digest()[:8], "big")) % (1 << 64)
        self.rows += 1

    def finalize(self) -> str:
        return f"{self.rows}:{self.total:016x}"
