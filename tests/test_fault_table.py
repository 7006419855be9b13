"""docs/faults.md: every row of the fault table names tests that exist, so the table cannot point at
a test that was renamed or removed. The named tests themselves run with the rest of the suite."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "docs" / "faults.md"
NODE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def rows(text: str) -> list[tuple[str, str]]:
    """(fault, last cell) of every data row of the markdown tables; a row of another width fails."""
    out = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 4, f"a table row without 4 cells: {line}"
        if cells[0] != "fault" and not set(cells[0]) <= set("-: "):
            out.append((cells[0], cells[3]))
    return out


def defined_tests(path: Path) -> set[str]:
    """The names of the test functions of a test file (module level and in classes)."""
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_row_names_a_test_that_exists():
    table = rows(TABLE.read_text())
    assert len(table) >= 30, f"{TABLE} lost rows: {len(table)}"
    problems = []
    for fault, tests in table:
        nodes = NODE.findall(tests)
        if not nodes:
            problems.append(f"{fault!r}: names no test ({tests!r})")
        for file, name in nodes:
            path = REPO / file
            if not path.is_file():
                problems.append(f"{fault!r}: {file} does not exist")
            elif name not in defined_tests(path):
                problems.append(f"{fault!r}: {file} has no test {name}")
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_missing_test(tmp_path):
    text = (
        "| fault | does | sees | test |\n|---|---|---|---|\n"
        "| a | b | c | `tests/test_fault_table.py::test_no_such_test` |\n"
    )
    ((fault, tests),) = rows(text)
    ((file, name),) = NODE.findall(tests)
    assert fault == "a" and name not in defined_tests(REPO / file)


@pytest.mark.parametrize("issue", ["read-only", "S3", "disk fills", "stop file", "convert2hf", "SIGKILL"])
def test_the_table_covers(issue):
    assert any(issue in fault for fault, _ in rows(TABLE.read_text())), issue
