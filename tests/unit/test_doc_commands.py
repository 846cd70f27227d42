"""Every `servesweep ...` command line in README.md and docs/*.md parses with the current CLI
(argparse only: nothing runs), and every repository path it names exists.

A command line is a line of a fenced code block, or an inline code span, that starts with
`servesweep ` (continuation backslashes joined, a trailing `# comment` dropped). Upper-case words
(`DIR`, `URL`, `R`, `N`, `MASTER_HOST`) are placeholders and take any value; a line with `...`
or `[...]` is a synopsis or an excerpt: its options must exist and take their values, but
options it leaves out may be required.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from servesweep.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[a-z]+)?$|^f0,\.\.\.,f23$")
# Paths the docs name that a run creates (results/, bench/.peers/) or that live outside the repository.
NOT_IN_REPO = ("results/", "/", "~", "bench/.peers", "DIR", "OUT")


class _Lenient(argparse.ArgumentParser):
    def error(self, message: str):  # raise instead of exiting, so the test can say which line
        raise ValueError(message)


def _commands() -> list[tuple[str, str]]:
    """(where, command line) for every servesweep command line in the docs."""
    found = []
    for path in DOCS:
        text = path.read_text()
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        for block in blocks:
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = line.strip()
                if line.startswith("servesweep "):
                    found.append((path.name, re.split(r"\s+#\s", line)[0]))
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        for span in re.findall(r"`(servesweep [^`]+)`", prose):
            found.append((path.name, span))
    return found


def _tolerant(parser: argparse.ArgumentParser) -> None:
    """Placeholders pass every option's type and choices, in every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _tolerant(sub)
            continue
        convert = action.type
        if convert is not None:
            action.type = (lambda f: lambda v: v if PLACEHOLDER.match(v) else f(v))(convert)
        if action.choices is not None:
            action.choices = _AnyPlaceholder(action.choices)


class _AnyPlaceholder(list):
    def __contains__(self, value: object) -> bool:
        return (isinstance(value, str) and bool(PLACEHOLDER.match(value))) or list.__contains__(self, value)


def _parser() -> argparse.ArgumentParser:
    parser = build_parser()
    for p in [parser, *(a.choices[name] for a in parser._actions if isinstance(a, argparse._SubParsersAction)
                        for name in a.choices)]:
        p.__class__ = _Lenient
    _tolerant(parser)
    return parser


def _check_excerpt(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """The subcommand exists and each option it names does, with its value where it takes one."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if argv[0] not in sub.choices:
        raise ValueError(f"no command {argv[0]!r}")
    command = sub.choices[argv[0]]
    known = {s: a for a in command._actions for s in a.option_strings}
    for i, token in enumerate(argv[1:], 1):
        if token.startswith("--"):
            name = token.split("=")[0]
            if name not in known:
                raise ValueError(f"{argv[0]}: no option {name}")


def _argv(line: str) -> tuple[list[str], bool]:
    """The arguments after `servesweep`, and whether the line is an excerpt or synopsis."""
    excerpt = "..." in line.replace("f0,...,f23", "") or "[" in line
    cleaned = line.replace("[", " ").replace("]", " ").replace("...", " ") if excerpt else line
    tokens = shlex.split(cleaned)[1:]
    return [t for t in tokens if t not in ("|",)], excerpt


def parse_problem(line: str) -> str | None:
    """Why a command line does not parse with the current CLI, or None."""
    argv, excerpt = _argv(line)
    parser = _parser()
    try:
        if excerpt or len(argv) < 2:
            _check_excerpt(parser, argv)  # `servesweep report` named in prose: the command exists
        else:
            parser.parse_args(argv)
    except ValueError as exc:
        return str(exc)
    return None


def missing_paths(line: str) -> list[str]:
    """The repository paths a command line names that do not exist."""
    missing = []
    for token in _argv(line)[0]:
        value = token.split("=", 1)[-1]
        if "/" not in value or value.startswith(("http://", "https://")) or value.startswith(NOT_IN_REPO):
            continue
        path = value.split(":")[0]  # compare's PATH:LEVEL
        if any(part.isupper() and len(part) > 1 for part in Path(path).parts):
            continue  # a placeholder folder (results/DIR)
        if not (ROOT / path).exists():
            missing.append(path)
    return missing


COMMANDS = _commands()


def test_the_docs_have_command_lines():
    assert len(COMMANDS) > 20


def test_the_checks_catch_a_wrong_line():
    assert "unrecognized arguments: --bogus" in parse_problem("servesweep run --concurrency 4 --bogus")
    assert "--out" in parse_problem("servesweep sweep scenarios/cpu-smoke.yaml")
    assert "no option --nope" in parse_problem("servesweep gate ... --nope N")
    assert parse_problem("servesweep capacity DIR --peak-rps R [--headroom 0.3] [--profile f0,...,f23]") is None
    assert missing_paths("servesweep sweep scenarios/nope.yaml --out DIR") == ["scenarios/nope.yaml"]
    assert missing_paths("servesweep compare examples/cpu-repeats/after-seed-fix/r3:c16 results/x") == []


@pytest.mark.parametrize("where,line", COMMANDS, ids=[f"{w}:{line[:60]}" for w, line in COMMANDS])
def test_every_command_line_parses(where, line):
    problem = parse_problem(line)
    assert problem is None, f"{where}: `{line}` does not parse: {problem}"


@pytest.mark.parametrize("where,line", COMMANDS, ids=[f"{w}:{line[:60]}" for w, line in COMMANDS])
def test_every_repository_path_a_command_names_exists(where, line):
    assert not missing_paths(line), f"{where}: `{line}` names {missing_paths(line)}, not in the repository"
