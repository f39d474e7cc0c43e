"""How a source's own records become rows of our catalogue (``simulations``, ``experiments``).

Shared by the merge engine (a source merged into a target) and the in-place upgrade (a run
file becoming an experiment database), so that one simulation gets the same catalogue row
whichever way it arrives.
"""

from __future__ import annotations

from farm_merge.consolidate.sources import SourceInfo, json_or_none
from farm_merge.storage.catalog import parse_time


def source_record(info: SourceInfo, theirs: str | None) -> dict:
    """The source's own ``simulations`` row for simulation ``theirs`` (empty if it has none).

    A per-run file's single row is its simulation's whatever id it recorded (2024 files
    record the integer 1).
    """
    record = info.simulations.get(theirs) if theirs is not None else None
    if record is None and len(info.simulations) == 1 and len(info.recorded_simulation_ids) <= 1:
        record = next(iter(info.simulations.values()))
    return record or {}


def simulation_values(info: SourceInfo, theirs: str | None, ours: str, *, experiment_id: str | None) -> dict:
    """The ``simulations`` row of simulation ``theirs`` of ``info``, stored under ``ours``.

    Parameters are the simulation's newest ``simulation_config`` JSON (the whole
    configuration), else the source's own ``parameters``.  A farm-merge experiment database
    used as a source already holds catalogue rows of ours: its era, parameters and
    recorded id are kept as they are.
    """
    record = source_record(info, theirs)
    if info.revision is not None:
        parameters = json_or_none(record.get("parameters"))
        era = record.get("era")
        recorded = record.get("source_simulation_id") if record else theirs
    else:
        single = len(info.recorded_simulation_ids) <= 1
        config = info.config_json if single else info.configs.get(theirs)
        parameters = json_or_none(config) if config else json_or_none(record.get("parameters"))
        era = info.era.label if info.era else None
        recorded = theirs
    return {
        "simulation_id": ours,
        "experiment_id": experiment_id,
        "start_time": parse_time(record.get("start_time")),
        "end_time": parse_time(record.get("end_time")),
        "status": record.get("status") or "completed",
        "parameters": parameters,
        "results_summary": json_or_none(record.get("results_summary")),
        "simulation_db_path": record.get("simulation_db_path") or str(info.path.resolve()),
        "source_simulation_id": None if recorded is None else str(recorded),
        "era": era,
    }


def experiment_values(row: dict, columns) -> dict:
    """A source's ``experiments`` row as values for our ``experiments`` table (``columns``)."""
    values = {c.name: row.get(c.name) for c in columns}
    values["experiment_id"] = str(row["experiment_id"])
    values["name"] = row.get("name") or values["experiment_id"]
    for key in ("creation_date", "last_updated"):
        values[key] = parse_time(values.get(key))
    for key in ("tags", "variables", "results_summary"):
        values[key] = json_or_none(values.get(key))
    return values
