"""Clients of the scoring service.

`seed` drives the unmodified seed client (`encrypted-inference`'s `EILinearRegressionClient`)
through the Azure ML notebook's flow; `python -m client` is the command line.
"""
