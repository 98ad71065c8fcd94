"""The ``cli`` group, its error boundary and the exit codes.

Library errors cross into the command line here and only here: a
:class:`~semsearch.errors.SemsearchError` becomes one line on stderr and exit
status 1 (75 for a held lock); anything else is one line too, unless
``SEMSEARCH_DEBUG=1`` asks for the traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import click

from ..config import environment
from ..errors import LockedError, SemsearchError

EXIT_PARTIAL = 3
EXIT_LOCKED = 75  # EX_TEMPFAIL in sysexits.h: a pipeline may retry


class CliError(click.ClickException):
    """A one-line error on stderr and exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class _LockedError(CliError):
    """Another writer holds the index: exit status 75, so that a pipeline can retry."""

    exit_code = EXIT_LOCKED


def _echo_warning(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
    click.echo(f"warning: {message}", err=True)


class _Group(click.Group):
    """The error boundary: library errors become one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        # A warning is one line on stderr too ("warning: ..."), not Python's two
        # lines naming a file and line inside the library.
        shown, warnings.showwarning = warnings.showwarning, _echo_warning
        try:
            return self._invoke(ctx)
        finally:
            warnings.showwarning = shown

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except LockedError as e:
            raise _LockedError(str(e)) from e
        except SemsearchError as e:
            raise CliError(str(e)) from e
        except KeyboardInterrupt:
            raise click.Abort() from None
        except BrokenPipeError:
            # The reader went away (`semsearch query ... | head`): not an error. Point
            # stdout at /dev/null so the interpreter's final flush cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as e:
            if environment().debug:
                raise
            raise CliError(
                f"unexpected {type(e).__name__}: {e} (set SEMSEARCH_DEBUG=1 for the traceback)"
            ) from e


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="semsearch")
def cli() -> None:
    """Semantic search for articles.

    \b
    Index a folder of articles, then search it by meaning:
      semsearch index examples/articles
      semsearch query "NATO Indo-Pacific"
    """
