"""One error style: typed errors from farm_merge.errors (bad input also a ValueError),
messages that name parameters as a Python caller writes them, and a command line that says
its flags instead."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from farm_merge.cli_flags import as_flags
from farm_merge.consolidate.plan import check_template
from farm_merge.errors import FarmMergeError, InvalidArgument
from farm_merge.query.points import parse_point

PACKAGE = Path(__file__).resolve().parent.parent / "farm_merge"


def _bare_raises(path: Path) -> list[int]:
    """Lines of ``path`` that raise the root FarmMergeError itself, or a plain ValueError."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func = node.exc.func
            if isinstance(func, ast.Name) and func.id in ("FarmMergeError", "ValueError"):
                lines.append(node.lineno)
    return lines


def test_the_library_raises_typed_errors_not_the_bare_root():
    found = {str(p.relative_to(PACKAGE)): lines for p in PACKAGE.rglob("*.py")
             if (lines := _bare_raises(p))}
    assert found == {}


@pytest.mark.parametrize("call", [lambda: check_template("{nope}"), lambda: check_template("{stem"),
                                  lambda: parse_point("last"), lambda: parse_point(-3)])
def test_bad_input_from_a_caller_is_a_value_error_naming_the_parameter(call):
    with pytest.raises(InvalidArgument) as caught:
        call()
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, FarmMergeError)
    assert str(caught.value).startswith(f"{caught.value.parameter}=")


@pytest.mark.parametrize("library, command_line", [
    ("pass replace=True to merge this file in its place, or id_template to give it another id",
     "pass --replace to merge this file in its place, or --id-template to give it another id"),
    ("id_template='{nope}': must use only {stem}", "--id-template '{nope}': must use only {stem}"),
    ("at='last': use one of final, max", "--at 'last': use one of final, max"),
    ("export it with format='sqlite' or format='csv', which keep", "export it with --format sqlite or --format csv, which keep"),
    ("x.db already exists; pass overwrite=True to replace", "x.db already exists; pass --overwrite to replace"),
    ("or pass include_active=True)", "or pass --include-active)"),
    ("a.db is the experiment database itself; choose another output", "a.db is the experiment database itself; choose another --output"),
    ("unknown simulations column 'experiment_id'; valid: a.experiment_id", "unknown simulations column 'experiment_id'; valid: a.experiment_id"),
])
def test_the_command_line_says_the_flags_for_the_parameters(library, command_line):
    assert as_flags(library) == command_line
