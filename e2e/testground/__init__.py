"""The test ground: real servers and a real Kubernetes control plane on one machine.

See docs/development.md. Nothing here is imported by the ``safehold`` package.
"""
