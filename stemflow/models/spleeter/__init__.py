"""TODO(regroup): package docstring."""
