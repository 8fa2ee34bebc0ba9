"""The ``safehold`` command line, used by people and inside the Job pods.

Entry point: :func:`safehold.cli.start.main` (``safehold = safehold.cli.start:main``, and
``python -m safehold``); :func:`safehold.cli.main.main` runs a command line in this
process. This package imports nothing itself, so that the entry point can start before
the commands load.
"""
