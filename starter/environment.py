"""What every starter shares: its settings from the environment, and how it ends.

A variable that does not parse is reported as one line naming it, never its value (pydantic's
own message quotes the value, and the variable may hold a secret), and never as a traceback;
so is a server the starter cannot reach (Unavailable, exit 3).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn

from pydantic import ValidationError

from golden_press.errors import EXIT_UNAVAILABLE, EXIT_USAGE, Unreachable
from golden_press.settings import Settings, settings_problem

__all__ = ["EXIT_UNAVAILABLE", "EXIT_USAGE", "run_starter", "settings_from_environment"]


def settings_from_environment() -> Settings | None:
    """The settings; None (after saying which variable is wrong) when they do not parse."""
    try:
        return Settings()
    except ValidationError as err:
        print(f"error: InvalidRequest: {settings_problem(err)}", file=sys.stderr)
        return None


def run_starter(main: Coroutine[Any, Any, int]) -> NoReturn:
    """Run `main` and exit with its code through os._exit (the SDK may crash at interpreter
    exit and hide it); a server that cannot be reached is one line, exit 3."""
    try:
        code = asyncio.run(main)
    except Unreachable as err:
        print(f"error: Unavailable: {err}", file=sys.stderr)
        code = EXIT_UNAVAILABLE
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
