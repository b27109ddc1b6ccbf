"""`python -m dqltoolkit.cli`."""

from . import main

main()
