"""Helpers of the command line (:mod:`stemflow.cli`): output layout and ownership, option values.

Kept apart from ``cli.py`` so the commands stay short; like the rest of the
library these modules never print, exit or read the environment.
"""
