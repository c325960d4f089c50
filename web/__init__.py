"""The browser client: the ES modules of `ScoringClient` for JavaScript and the demo page.

A Python package only so that the files ship with the service (package data); `service.demo`
serves this folder at `/demo/`. Nothing here is imported by Python code except `digits`.
"""
