"""The command line: help everywhere, exact output formats, the demo."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from conftest import REPO, rows
from farm_merge import __version__
from farm_merge.cli import cli
from farm_merge.storage import legacy


def all_commands():
    return sorted(cli.commands)


@pytest.mark.parametrize("name", all_commands())
def test_every_command_has_help_and_is_in_the_readme(name):
    command = cli.commands[name]
    assert command.help and command.help.strip()
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert f"farm-merge {name}" in (REPO / "README.md").read_text()


def test_every_option_has_help():
    for command in cli.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help",):
                assert param.help, f"{command.name} {param.opts}"


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.output == f"farm-merge, version {__version__}\n"


def test_merge_json_report(runs_dir, tmp_path):
    result = CliRunner().invoke(cli, ["merge", f"{runs_dir}/*.db", "--into", str(tmp_path / "exp.db"), "--json"])
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["merged"] == len(legacy.ERAS) and report["failed"] == 0
    assert report["experiment_id"] == "exp"
    assert {s["era"] for s in report["sources"]} == {e.name for e in legacy.ERAS}
    assert all(s["status"] == "merged" and s["rows"] > 0 for s in report["sources"])


def test_merge_table_and_rerun_message(runs_dir, tmp_path):
    target = tmp_path / "exp.db"
    first = CliRunner().invoke(cli, ["merge", str(runs_dir), "--into", str(target), "--name", "LR sweep"])
    assert first.exit_code == 0
    assert first.output.splitlines()[0].split() == ["status", "source", "simulation", "era", "rows", "reason"]
    assert f"merged {len(legacy.ERAS)}, skipped 0, failed 0 into {target} (experiment exp)" in first.output
    assert rows(target, "SELECT name FROM experiments") == [("LR sweep",)]
    second = CliRunner().invoke(cli, ["merge", str(runs_dir), "--into", str(target)])
    assert second.exit_code == 0
    assert f"merged 0, skipped {len(legacy.ERAS)}, failed 0" in second.output
    assert second.output.rstrip().endswith("nothing new to merge")


def test_quiet_prints_only_failures(runs_dir, tmp_path):
    (tmp_path / "junk.db").write_text("junk")
    result = CliRunner().invoke(cli, ["merge", str(runs_dir), str(tmp_path / "junk.db"),
                                      "--into", str(tmp_path / "exp.db"), "--quiet"])
    assert result.exit_code == 1
    assert result.output == f"failed: {tmp_path / 'junk.db'}: not a SQLite database\n"


def test_python_dash_m_and_the_demo_run_on_a_fresh_folder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "farm_merge", "demo", str(tmp_path / "demo"), "--runs", "8"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "merged 8, skipped 0, failed 0" in result.stdout
    target = tmp_path / "demo" / "experiment.db"
    assert f"farm-merge summary {target} --by learning_rate\n" in result.stdout  # what the sample runs vary
    assert (f"farm-merge compare {target} --metric total_agents --by learning_rate --plot "
            "agents_by_learning_rate.png\n") in result.stdout
    assert rows(tmp_path / "demo" / "experiment.db", "SELECT count(*) FROM simulations") == [(8,)]
    again = subprocess.run([sys.executable, "-m", "farm_merge", "demo", str(tmp_path / "demo")],
                           capture_output=True, text=True)
    assert "nothing new to merge" in again.stdout
