"""The migrations ship in the wheel: built, installed into a fresh virtual environment in a
temporary folder, and run from another working directory, away from the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, SMALL, rows
from farm_merge import samples

#: What the wheel is built from: the project's own files, copied so that the build
#: neither sees nor leaves anything else in the checkout.
PROJECT_FILES = ("pyproject.toml", "README.md", "alembic.ini", "farm_merge", "alembic")


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.timeout(300)
def test_installed_wheel_upgrades_a_run_file_from_another_directory(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in PROJECT_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", source])
    (wheel,) = (tmp_path / "dist").glob("farm_merge-*.whl")
    with zipfile.ZipFile(wheel) as archive:  # what farm-merge serve reads from its package
        shipped = set(archive.namelist())
    assert {"farm_merge/ui/templates/farm_merge_experiment.html", "farm_merge/ui/templates/farm_merge_simulation.html",
            "farm_merge/ui/static/farm-merge.js", "farm_merge/ui/static/farm-merge.css"} <= shipped

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel])

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = samples.write_run_file(elsewhere / "simulation_20250301.db", "2025-02", seed=1, **SMALL)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = _run([python, "-c", "from farm_merge.storage import migrations; print(migrations.script_location())"],
                 cwd=elsewhere, env=env)
    assert Path(where.stdout.strip()) == next((venv / "lib").glob("python3*/site-packages/farm_merge/_alembic"))

    farm_merge = venv / "bin" / "farm-merge"
    upgraded = _run([farm_merge, "upgrade", run.path.name, "--simulation-id", "sim_0301", "--no-backup"],
                    cwd=elsewhere, env=env)
    assert upgraded.stderr.splitlines() == ["applied 0002_simulation_keys", "applied 0003_experiment_catalog",
                                          "applied 0004_fractional_ages", "applied 0005_ledger_source_simulations"]
    assert upgraded.stdout.startswith(f"upgraded {run.path.name} from a legacy AgentFarm run file of era 2025-02")
    current = _run([farm_merge, "current", run.path.name], cwd=elsewhere, env=env)
    assert current.stdout == f"{run.path.name}: 0005_ledger_source_simulations (head)\n"
    assert rows(run.path, "SELECT DISTINCT simulation_id FROM agent_states") == [("sim_0301",)]

    # Alembic itself, from the same folder away from the checkout, with the ini the package ships.
    ini = _run([farm_merge, "alembic-ini"], cwd=elsewhere, env=env).stdout.strip()
    assert Path(ini) == Path(where.stdout.strip()) / "alembic.ini"
    other = samples.write_run_file(elsewhere / "simulation_20241201.db", "2024-12", seed=2, **SMALL)
    _run([venv / "bin" / "alembic", "-c", ini, "-x", f"db={other.path.name}", "-x", "simulation_id=sim_1201",
          "-x", "backup=no", "upgrade", "head"], cwd=elsewhere, env=env)
    again = _run([farm_merge, "current", other.path.name], cwd=elsewhere, env=env)
    assert again.stdout == f"{other.path.name}: 0005_ledger_source_simulations (head)\n"
    assert rows(other.path, "SELECT DISTINCT simulation_id FROM agent_states") == [("sim_1201",)]
