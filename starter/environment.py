"""The starters' settings, read from the environment like the worker's and the API's.

A variable that does not parse is reported as one line naming it, never its value (pydantic's
own message quotes the value, and the variable may hold a secret), and never as a traceback.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from golden_press.settings import Settings, settings_problem

#: The exit code of a starter whose command line or environment is unusable.
EXIT_USAGE = 2


def settings_from_environment() -> Settings | None:
    """The settings; None (after saying which variable is wrong) when they do not parse."""
    try:
        return Settings()
    except ValidationError as err:
        print(f"error: InvalidRequest: {settings_problem(err)}", file=sys.stderr)
        return None
