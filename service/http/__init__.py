"""HTTP-level mechanisms of the web process, between uvicorn and the routes."""
