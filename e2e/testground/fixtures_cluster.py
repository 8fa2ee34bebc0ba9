"""pytest fixtures for the Kubernetes test ground (filled in by the test-ground issue)."""
