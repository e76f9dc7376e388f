"""Command-line entry points, one per dataset, over the shared runner."""
