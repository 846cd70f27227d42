"""The one way servesweep makes a rich console (the CLI, the sweep and the reports all print on one)."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def plain_console(**kwargs: Any) -> Console:
    """A console that never reads rich markup. Every console servesweep prints on is one: what it
    prints holds text from servers (error messages, model names) and files (paths, scenario names),
    and a `[/INST]` in it must print as itself rather than crash the end of a run with a
    MarkupError (or a tag that looks like one vanish). Colour comes from `style=` and
    `rich.text.Text` instead."""
    return Console(markup=False, **kwargs)
