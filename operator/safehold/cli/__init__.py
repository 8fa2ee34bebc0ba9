"""The ``safehold`` command line, used by people and inside the Job pods.

Entry point: :func:`main` (``safehold = safehold.cli:main``, and ``python -m safehold``).
"""

from safehold.cli.main import main

__all__ = ["main"]
