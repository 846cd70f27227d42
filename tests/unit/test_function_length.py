"""No function outside servesweep/testing/ is over 80 lines: a longer one is split into named steps."""

import ast
from pathlib import Path

import servesweep

PACKAGE = Path(servesweep.__file__).parent
MAX_LINES = 80


def _long_functions() -> list[str]:
    """`path:line name (N lines)` for each function over MAX_LINES, counted from its `def` to the
    last line of its body (decorators left out, nested functions counted in their parent too)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "testing":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    found.append(f"servesweep/{rel}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_over_80_lines_outside_testing():
    assert _long_functions() == []


def test_the_count_runs_from_def_to_the_end_of_the_body():
    source = "def f(\n    a,\n):\n" + "    a += 1\n" * 78 + "    return a\n"
    node = ast.parse(source).body[0]
    assert node.end_lineno - node.lineno + 1 == 82
