"""``python -m safehold``: the same as the ``safehold`` command."""

from safehold.cli import main

raise SystemExit(main())
