"""Beam transforms and the pure-Python message model they build on."""
