"""Encrypted-inference scoring service.

`app` wires `http` (connections, credentials, admission, body bounds, request tracking) in front of
`routes` (thin handlers), which run scorings in `workers` (a pool of processes that knows no
protocol). What a worker runs is `model_runtime`: the model loaded once and served by `azureml`
(the Azure ML contract, `POST /score`) and `v1` (the v1 protocol), with public keys from `storage`.
docs/architecture.md follows one request through them.
"""
