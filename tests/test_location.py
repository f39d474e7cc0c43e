"""A database's place is read once: :class:`farm_merge.storage.db.Location`."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm_merge import ExperimentQueryTool, consolidate, upgrade
from farm_merge.errors import FarmMergeError
from farm_merge.storage import db, versions
from farm_merge.storage.db import Location


@pytest.mark.parametrize("text, kind, name, path", [
    ("exp.db", "sqlite", "exp.db", Path("exp.db")),
    ("sqlite:///runs/exp.db", "sqlite", "sqlite:///runs/exp.db", Path("runs/exp.db")),
    ("sqlite://", "sqlite", "sqlite://", None),
    ("postgresql://me:secret@127.0.0.1:5432/exp", "postgresql", "postgresql://me:***@127.0.0.1:5432/exp", None),
])
def test_a_target_is_parsed_into_its_kind_path_and_name(text, kind, name, path):
    location = Location.parse(text)
    assert (location.kind, location.name, location.path) == (kind, name, path)
    assert Location.parse(location) is location
    assert db.display(text) == name and db.sqlite_path(text) == path


def test_a_url_that_cannot_be_parsed_is_refused_without_its_password():
    with pytest.raises(FarmMergeError, match=r"postgresql://me:\*\*\*@host:port/x: not a database URL"):
        Location.parse("postgresql://me:secret@host:port/x")
    assert db.display("postgresql://me:secret@host:port/x") == "postgresql://me:***@host:port/x"


def test_the_server_url_means_psycopg_and_the_name_is_the_database():
    location = Location.parse("postgresql://127.0.0.1/exp")
    assert location.server_url().drivername == "postgresql+psycopg"
    assert location.database_name == "exp" and Location.parse("runs/e1.db").database_name == "e1"


@pytest.fixture
def parsed_texts(monkeypatch) -> list[str]:
    """Every text (not a Location already) that Location.parse reads, in order."""
    texts, parse = [], Location.parse.__func__

    def counting(cls, target):
        if not isinstance(target, Location):
            texts.append(str(target))
        return parse(cls, target)

    monkeypatch.setattr(Location, "parse", classmethod(counting))
    return texts


def test_a_merge_reads_its_target_once(runs_dir, tmp_path, parsed_texts):
    target = tmp_path / "exp.db"
    consolidate.merge([str(runs_dir / "*.db")], str(target), progress=False)
    consolidate.merge([str(runs_dir / "*.db")], str(target), progress=False)  # a re-run reads the ledger
    assert parsed_texts == [str(target), str(target)]


def test_a_reader_and_an_upgrade_read_their_target_once(runs_dir, tmp_path, parsed_texts):
    target = tmp_path / "exp.db"
    consolidate.merge([str(runs_dir / "*.db")], Location.parse(target), progress=False)
    parsed_texts.clear()
    with ExperimentQueryTool(str(target)) as tool:
        tool.list_records()
    upgrade(str(target))
    assert versions.state_of(str(target)).at_head
    assert parsed_texts == [str(target)] * 3
