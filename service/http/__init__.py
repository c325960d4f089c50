"""What every route shares, in the order a request meets it, between uvicorn and the routes:
connection bounds, identity (auth), admission (batch permission and quota, metering), then
body bounds.

The identity is decided once, at the edge, and passed inward as a value (`Identity`): routes,
metering and the key store receive it; none of them reads a header.
"""
