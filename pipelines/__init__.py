"""Pipelines: Beam pipelines wired from transforms, each exposing run(argv)."""
