"""Helpers of the command line (:mod:`stemflow.cli`): output layout and ownership, option values.

Kept apart from ``cli.py`` so the commands stay short. They never exit or read
the environment; only :func:`stemflow.commandline.batch.separate_all` prints,
to the console the command gives it.
"""
