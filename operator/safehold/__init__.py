"""Safehold: a Kubernetes backup operator and the backup engine its Jobs run.

Layers, lowest first (enforced by import-linter, see pyproject.toml):
``storage`` -> ``repo`` -> ``engine`` -> ``controller`` -> ``cli``; ``api`` holds
the custom-resource models and imports nothing else of Safehold.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
