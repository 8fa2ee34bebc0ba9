"""pytest fixtures for the object-store servers (filled in by the storage issue)."""
