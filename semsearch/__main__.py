"""``python -m semsearch``: the command line."""

from .cli import main

main()
