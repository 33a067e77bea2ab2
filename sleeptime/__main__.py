"""`python -m sleeptime`: the CLI without the installed console script (e.g. on a machine with only the source)."""

from sleeptime.cli import main

main()
