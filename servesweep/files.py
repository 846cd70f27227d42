"""Reading the YAML (or JSON) files users write: scenarios, gate specs, price tables; and how a
path is written into a result file. On the ground floor: the scenario schema, the gate spec and
the reports all read such files and write such paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def read_yaml_file(path: Path, what: str, error: type[Exception]) -> Any:
    """The parsed file; anything that keeps it from being read (missing, a directory, not UTF-8
    text, a syntax error) raises `error` naming `what` and the path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path}: file does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path}: is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise error(f"{what} {path}: cannot be read: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:  # one line: where, and what is wrong there
        line = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark is not None else ""
        raise error(f"{what} {path}: not valid YAML or JSON: {line}{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path}: not valid YAML or JSON: {exc}") from None


def display_path(path: Path) -> str:
    """`path` as written in result files: relative to the working directory when under it, so
    committed files do not carry one machine's absolute paths."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)
    except ValueError:  # another drive (Windows)
        return str(path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a key given twice in one mapping is an error: YAML keeps the last silently,
    so `concurrency` written twice ran the second list without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"key {key!r} is given twice", key_node.start_mark)
            try:
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so
                pass
        return super().construct_mapping(node, deep=deep)
