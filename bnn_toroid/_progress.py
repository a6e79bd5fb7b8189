"""Progress bars only where a person watches them.

Every bar of the package comes from :func:`bar`. It is drawn when the caller does not ask
for quiet *and* stderr is a terminal: a log file or a pipe gets no carriage-return
updates (a 2,000-epoch fit once left 229 KB of them in a log).
"""
from __future__ import annotations

import sys


def shown(quiet: bool = False) -> bool:
    """Whether a bar would be drawn: not ``quiet`` and stderr is a terminal."""
    if quiet:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):   # replaced or closed stderr
        return False


def bar(total: int, desc: str, quiet: bool = False, **kwargs):
    """A tqdm bar over ``total`` steps, disabled unless :func:`shown`."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=not shown(quiet), **kwargs)
