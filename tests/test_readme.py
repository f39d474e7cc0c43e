"""README.md runs as written, and agrees with the command line.

Every ```sh, ```bash and ```python block of the README runs, in order, in one fresh folder
where ``farm-merge demo`` ran first: shell blocks through ``bash`` (``set -eo pipefail``) with
this environment's ``farm-merge``, ``alembic`` and ``python`` first on ``PATH``, Python blocks
with this environment's Python.  ```text blocks are the output the README shows, not run:
each line of a ```text block right after a block (or of a shell block's ``# `` comments), but
for "…" and what changes between runs (times, dates, backup names), must be a line the block
printed, so an example whose output changes must show the new output.

An HTML comment on the line before a block says how to treat it:

* ``<!-- not run: REASON -->``: the block only shows a shape (an install, a server that never
  returns, AgentFarm's checkout); its test is skipped with the README line and the reason.
* ``<!-- file: NAME -->``: the block is a file later blocks run; it is written as NAME.
* ``<!-- postgres: NAME -->``: the block uses the PostgreSQL server at 127.0.0.1:5432; NAME, the
  database it creates, is replaced by a throwaway name, dropped afterwards.

The README's scripts (``python scripts/…``) run "from a checkout": the folder gets a link to
this checkout's ``scripts/``.  The table under "Commands and options" must list exactly the
options each command's ``--help`` has, and ``.ci/run`` must end with the README's test command.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from backends import PREFIX, SERVER_URL, _conninfo, require_postgres
from conftest import REPO
from farm_merge.cli import cli

README = REPO / "README.md"
RUNNABLE = {"sh": "bash", "bash": "bash", "python": "python"}
MARKER = re.compile(r"^<!--\s*(not run|file|postgres):\s*(.*?)\s*-->$")
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    line: int  # the README line of the opening fence
    lang: str
    code: str
    mark: str | None = None  # "not run", "file" or "postgres"
    arg: str = ""
    shown: str = ""  # the ```text block right after it: the output the README shows

    def __str__(self) -> str:
        return f"line{self.line}-{self.lang}"


def blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` with the marker on the line before it, if any."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = MARKER.match(lines[start - 1].strip()) if start else None
        found.append(Block(start + 1, lang, "\n".join(lines[start + 1:end]) + "\n",
                           marker.group(1) if marker else None, marker.group(2) if marker else ""))
        i = end + 1
    for n, block in enumerate(found[:-1]):  # a ```text block just after a block is its output
        after = found[n + 1]
        if after.lang == "text" and after.line == block.line + block.code.count("\n") + 2:
            found[n] = Block(block.line, block.lang, block.code, block.mark, block.arg, after.code)
    return found


#: What changes from one run to the next: times, dates, backup names, this folder.
VARIES = [(re.compile(r"in \d+\.\ds"), "in Xs"), (re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"), "DATE"),
          (re.compile(r"\d{8}-\d{6}"), "STAMP")]


def normal(line: str) -> str:
    for pattern, replacement in VARIES:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def shown_lines(block: Block) -> list[str]:
    """The output lines the README shows for ``block`` (its ```text block, or its ``# `` comments
    in a shell block after the first command), "…" left out."""
    if block.shown:
        lines = block.shown.splitlines()
    elif block.lang in ("sh", "bash"):
        lines = [line[2:] for line in block.code.splitlines() if line.startswith("# ")]
    else:
        lines = []
    return [normal(line) for line in lines if line.strip() and line.strip() != "…"]


RUN = [b for b in blocks(README.read_text()) if b.lang in RUNNABLE]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A fresh folder after `farm-merge demo`, with the checkout's scripts/ as in a checkout."""
    where = tmp_path_factory.mktemp("readme")
    env = environment()
    subprocess.run([BIN / "farm-merge", "demo", "--quiet"], cwd=where, env=env, check=True, capture_output=True)
    (where / "scripts").symlink_to(REPO / "scripts")
    return where


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("EXPERIMENT_")
           and k != "USE_EXPERIMENT_DB"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    return env


def run(block: Block, code: str, folder: Path) -> subprocess.CompletedProcess:
    command = (["bash", "-c", "set -eo pipefail\n" + code] if RUNNABLE[block.lang] == "bash"
               else [sys.executable, "-c", code])
    return subprocess.run(command, cwd=folder, env=environment(), capture_output=True, text=True, timeout=300)


def test_the_readme_has_blocks_to_run():
    assert len([b for b in RUN if b.mark is None]) >= 10
    assert {b.lang for b in RUN} >= {"sh", "python"}


@pytest.mark.parametrize("block", RUN, ids=str)
def test_readme_block_runs_as_written(block: Block, folder: Path):
    if block.mark == "not run":
        pytest.skip(f"README.md line {block.line}: not run: {block.arg}")
    if block.mark == "file":
        compile(block.code, block.arg, "exec" if block.lang == "python" else "single")
        (folder / block.arg).write_text(block.code)
        return
    code = block.code
    dropped = None
    if block.mark == "postgres":
        require_postgres()
        assert block.arg and block.arg in code, f"README.md line {block.line}: the marker names {block.arg!r}"
        dropped = f"{PREFIX}readme_{uuid.uuid4().hex[:8]}"
        code = code.replace(block.arg, dropped)
    try:
        result = run(block, code, folder)
    finally:
        if dropped:
            import psycopg

            with psycopg.connect(_conninfo(SERVER_URL), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{dropped}" WITH (FORCE)')
    assert result.returncode == 0, f"README.md line {block.line}:\n{block.code}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, f"README.md line {block.line}:\n{result.stderr}"
    printed = {normal(line) for line in (result.stdout + result.stderr).replace(dropped or "\0", block.arg).splitlines()}
    missing = [line for line in shown_lines(block) if line not in printed]
    assert not missing, f"README.md line {block.line} shows output it did not print:\n" + "\n".join(missing)


# --- the reference table and --help ------------------------------------------------------------

def readme_options() -> dict[str, set[str]]:
    """Per command, the options its row of the "Commands and options" table lists."""
    section = README.read_text().split("## Commands and options", 1)[1].split("\n## ", 1)[0]
    table = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`farm-merge "):
            name = cells[0].strip("`").split()[1]
            table[name] = set(re.findall(r"`(--?[a-z][\w-]*)`", cells[2]))
    return table


def help_options(command: click.Command) -> set[str]:
    return {opt for p in command.params if isinstance(p, click.Option)
            for opt in (*p.opts, *p.secondary_opts)} - {"--help", "-h"}


def test_the_reference_table_lists_every_command_and_each_option_its_help_has():
    table = readme_options()
    assert set(table) == set(cli.commands), "commands in the README's table vs farm-merge --help"
    for name, command in cli.commands.items():
        assert table[name] == help_options(command), f"farm-merge {name}: README table vs --help"
        listed = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", command.get_help(click.Context(command))))
        assert help_options(command) <= listed


def test_ci_runs_exactly_the_readme_test_command():
    text = README.read_text()
    section = text.split("Run the tests", 1)[1]
    (command,) = [b.code.strip() for b in blocks(section)[:1]]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1].replace("pip install --quiet ", "pip install ") == command  # pip quietly in CI
    assert "farm-merge --version" in text
