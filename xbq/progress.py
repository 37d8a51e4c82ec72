"""Progress for long commands: a tqdm bar on a terminal, silence otherwise.

Every long command (``reproduce``, ``calibrate``, ``simulate``, ``measure``, ``fuzz``) reports
through :class:`Progress`: a bar with rate and ETA on stderr when stderr is a terminal, nothing
when it is not (CI logs, pipes) or when the command prints JSON. :func:`xbq._jit.first_compile`
prints a one-line notice before the first call of kernels whose cache is cold.
"""

from __future__ import annotations

import sys


class Progress:
    """A progress bar over ``total`` steps (``with Progress(n, "sweep") as bar``).

    Parameters
    ----------
    total : int or None
        Steps expected (None: unknown, no ETA).
    desc : str
        What is being counted, shown before the bar.
    unit : str
        Name of one step.
    quiet : bool
        No output at all (``--json``); the bar is also silent when stderr is no terminal.
    """

    def __init__(self, total, desc: str, *, unit: str = "point", quiet: bool = False):
        self.total = total
        self._bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                             dynamic_ncols=True, leave=True)

    @property
    def active(self) -> bool:
        """A bar is shown (stderr is a terminal and not quiet)."""
        return self._bar is not None

    def update(self, n: int = 1, **postfix) -> None:
        """Advance by ``n`` steps; ``postfix`` values are shown after the bar."""
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)

    def write(self, text: str, file=None) -> None:
        """Print a line (to ``file``, default stdout), above the bar when one is shown."""
        file = sys.stdout if file is None else file
        if self._bar is not None:
            self._bar.write(text, file=file)
        else:
            print(text, file=file, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
