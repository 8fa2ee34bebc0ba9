"""``python -m safehold``: the same as the ``safehold`` command."""

from safehold.cli.start import main

raise SystemExit(main())
