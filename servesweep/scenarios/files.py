"""Reading the YAML (or JSON) files users write: scenarios and gate specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml_file(path: Path, what: str, error: type[Exception]) -> Any:
    """The parsed file; a missing file or a syntax error raises `error` naming `what` and the path."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise error(f"{what} {path}: file does not exist") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path}: not valid YAML or JSON: {exc}") from None
