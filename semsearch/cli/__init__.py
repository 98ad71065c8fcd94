"""The ``semsearch`` command: each command parses, calls one library function, formats.

Exit status: 0 success; 1 error (or ``verify`` found a problem); 2 usage
error; 3 done, but some inputs were skipped (or some ids to remove were not
found); 75 another process is writing to the index (try again later).

The package, one room each:

- ``app``: the ``cli`` group, its error boundary (library errors become one
  line on stderr) and the exit codes.
- ``options``: the options several commands share, as plain decorators.
- ``write``: ``index``, ``load`` and ``remove``.
- ``read``: ``query``, ``info``, ``verify`` and ``eval``.
- ``serve``: ``serve``, the HTTP server (:mod:`semsearch.serve`, imported when it runs).
- ``filters``: ``--where``/``--since``/``--until``/``--tag``/``--filter`` to a
  filter spec (imported by ``query`` only when it runs).
- ``format``: text output: snippets, hits, summaries.

Heavy modules (the index, the encoders) are imported inside the commands, so
``semsearch --help`` stays light and never imports torch.
"""

from __future__ import annotations

from . import read, serve, write  # noqa: F401  (importing them registers their commands)
from .app import EXIT_LOCKED, EXIT_PARTIAL, CliError, cli

__all__ = ["EXIT_LOCKED", "EXIT_PARTIAL", "CliError", "cli", "main"]


def main() -> None:
    """Entry point of the ``semsearch`` command."""
    cli(prog_name="semsearch")
