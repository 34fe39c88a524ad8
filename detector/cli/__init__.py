"""The ``detector`` command line."""
