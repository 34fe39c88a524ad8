"""``python -m detector`` is the ``detector`` command."""

from detector.cli.main import main

main()
