"""SQL text built from names a file chose: quoted identifiers, declared types made safe for
DDL, and SQLite's column affinity (section 3.1 of its datatype docs)."""

from __future__ import annotations

import re


def quote(identifier: str) -> str:
    """Quote an SQL identifier; safe for any name a hostile file may hold."""
    return '"' + identifier.replace('"', '""') + '"'


_PLAIN_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_ ]*(\(\s*[+-]?\d+\s*(,\s*[+-]?\d+\s*)?\))?$")


def safe_type(declared: str) -> str:
    """A column type to put in DDL: the declared one if it is plain, else its affinity
    (a hostile file can declare anything)."""
    return declared if not declared or _PLAIN_TYPE.match(declared) else affinity(declared)


def affinity(declared: str) -> str:
    """SQLite's column affinity for a declared type (section 3.1 of the datatype docs)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if any(s in t for s in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"
