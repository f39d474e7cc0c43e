"""The merge as a pipeline (plan -> decide -> load -> finish) of functions that return their
results: what each step gives back, and that none changes what it was handed."""

from __future__ import annotations

import shutil

from farm_merge.consolidate import engine
from farm_merge.consolidate.plan import reject_duplicate_ids, skip_copies
from farm_merge.storage.db import Location


def _plan(sources, target, **options):
    options = {"new": True, "id_template": None, "replace": False, "include_active": False,
               "keep_copies": False, "progress": False, **options}
    return engine.plan_merge([str(s) for s in sources], Location.parse(target), **options)


def test_planning_returns_plans_and_results_and_writes_nothing(runs_dir, tmp_path):
    source = runs_dir / "run_06_2025-11.db"
    shutil.copy(source, tmp_path / "copy.db")
    given = [str(source), str(tmp_path / "copy.db"), str(tmp_path / "missing.db")]
    planned = _plan(given, tmp_path / "exp.db")
    assert given == [str(source), str(tmp_path / "copy.db"), str(tmp_path / "missing.db")]
    assert [p.info.path for p in planned.plans] == [source]
    assert sorted((r.path, r.status) for r in planned.results) == [
        (str(tmp_path / "copy.db"), "skipped"), (str(tmp_path / "missing.db"), "failed")]
    assert planned.unmatched == [str(tmp_path / "missing.db")]
    assert not (tmp_path / "exp.db").exists()


def test_the_plan_steps_return_what_they_keep_and_leave_their_input_alone(runs_dir, tmp_path):
    source = runs_dir / "run_06_2025-11.db"
    shutil.copy(source, tmp_path / "copy.db")
    planned = _plan([source, tmp_path / "copy.db"], tmp_path / "exp.db", keep_copies=True)
    assert planned.plans == [] and [r.status for r in planned.results] == ["failed", "failed"]  # one id, two files
    plans, failed = engine._inspect_all(planned.files, include_active=False, id_template=None, progress=False)
    assert failed == [] and len(plans) == 2
    given = list(plans)
    kept, clashes = reject_duplicate_ids(plans)
    assert plans == given and kept == [] and [r.status for r in clashes] == ["failed", "failed"]
    kept, copies = skip_copies(plans, merged={}, in_ledger=lambda plan: False)
    assert plans == given and kept == [plans[0]] and [(r.path, r.status) for r in copies] == [
        (str(tmp_path / "copy.db"), "skipped")]


def test_a_merge_builds_its_report_from_what_the_steps_return(runs_dir, tmp_path):
    """Every source given has exactly one result, in the order given, from whichever step
    settled it (planning, the decision, the load)."""
    target = tmp_path / "exp.db"
    engine.merge([str(runs_dir / "run_06_2025-11.db")], str(target), progress=False)
    given = [str(tmp_path / "missing.db"), *sorted(str(p) for p in runs_dir.glob("*.db"))]
    report = engine.merge(given, str(target), progress=False, replace=False)
    assert [r.path for r in report.results] == given
    statuses = {r.path: r.status for r in report.results}
    assert statuses.pop(str(tmp_path / "missing.db")) == "failed"
    assert statuses.pop(str(runs_dir / "run_06_2025-11.db")) == "skipped"
    assert set(statuses.values()) == {"merged"}
