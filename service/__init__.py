"""Encrypted-inference scoring service.

Layers, each knowing only the one below it:
`app` (HTTP, thin) -> `runtime` (worker processes) -> `score` (the Azure ML `init()`/`run()` entry
script) -> `keystore` (public keys from Blob Storage) and `engines` (homomorphic evaluation).
"""
