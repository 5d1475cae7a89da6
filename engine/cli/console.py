"""The console the CLI prints through: text from a message is data, never markup, never terminal control.

Rich reads `[...]` in any string as console markup: `[/]` in a message type
crashed `vigil log`, `[link=...]` made a clickable link, and a LOINC name such
as "Eosinophils [#/volume] in Blood" lost its brackets. Escape and OSC
sequences from a message reached the operator's terminal (`ESC[2J` cleared it).

So every console of the CLI is a `DataConsole`: markup, highlighting and
emoji codes off, and every string it renders passed through `engine.core.inert`,
which shows control characters (C0 but tab and newline, DEL, C1) and the
Unicode bidirectional controls (the "Trojan source" reordering) as visible
escapes.
Styling is given as `rich.text.Text` with a style, never as markup in a
string, so nothing a message holds can change how the screen is drawn.
"""

from __future__ import annotations

from typing import Any, final

import click
from rich.console import Console
from rich.text import Text

from engine.core.errors import VigilError
from engine.core.inert import inert

__all__ = ["DataConsole", "InertGroup", "inert", "styled"]


def styled(text: object, style: str = "") -> Text:
    """A piece of data, inert, in a style of the CLI's choosing."""
    return Text(inert(str(text)), style=style)


class InertGroup(click.Group):
    """A command group whose failures are one inert line each, never a traceback.

    Vigil's own errors (a corrupt or locked log, a bad configuration) and the
    operating system's (a read-only directory, a port in use) become a
    one-line `Error: ...` and exit 1; a refusal that quotes a key or a reason
    goes out with its control characters made visible.
    """

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a known failure goes out as one line."""
        try:
            return super().invoke(ctx)
        except (VigilError, OSError) as exc:
            raise click.ClickException(inert(str(exc))) from None
        except click.ClickException as exc:
            shown = inert(exc.message)
            if shown == exc.message or isinstance(exc, click.UsageError):
                raise
            raise click.ClickException(shown) from None


@final
class DataConsole(Console):
    """A rich console that never interprets the text it prints."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        kwargs.setdefault("highlight", False)
        kwargs.setdefault("emoji", False)
        super().__init__(**kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """Every string printed (cells, titles, lines): inert, and never markup."""
        kwargs["markup"] = False
        kwargs["emoji"] = False
        return super().render_str(inert(text), **kwargs)
