"""Pipelines: Beam pipelines wired from beaconflow.transforms, each exposing run(argv)."""

import logging

# Importing apache_beam logs "apitools not found" through the root logger; with no handler
# there, logging would configure itself with its bare default format before the command
# sets up its own. A NullHandler keeps that import-time line from reaching the terminal.
if not logging.getLogger().handlers:
    logging.getLogger().addHandler(logging.NullHandler())
