"""Safehold's operator: kopf handlers that turn resources into Jobs and Job results into status.

One module per kind (:mod:`.backuplocation`, :mod:`.backuppolicy`, :mod:`.backuprun`,
:mod:`.restorerequest`); :mod:`.jobs` builds every Job; :mod:`.status` maps Job results to
status; :mod:`.schedule` is the cron math; :mod:`.metrics` the Prometheus metrics. The
controller never touches storage or repository data (import-linter enforces it) and never
reads a Secret: the Jobs do the work with the Secrets mounted by reference.
"""

from __future__ import annotations

from safehold.controller.operator import run

__all__ = ["run"]
