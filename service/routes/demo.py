"""`GET /demo`: the browser client's page and ES modules (the `web` package's files), same origin.

Only files of the listed types are served, from `web/` and `web/vendor/` (make copies the
@noble/ciphers modules there), with a strict Content-Security-Policy: everything from this
origin, no inline script or style, no framing. Those files are open without credentials
(`OPEN_PATHS`); the page sends the API key its user types on every `/v1/` call.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

import web
from service.errors import NotFound

WEB_ROOT = Path(web.__file__).resolve().parent
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".bin": "application/octet-stream",
               ".png": "image/png"}
SERVED_FOLDERS = (WEB_ROOT, WEB_ROOT / "vendor" / "noble-ciphers")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
                               "object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# Static files hold no secret: a browser must load the page before anyone can type an API key into it.
OPEN_PATHS = frozenset({"/demo", "/demo/"} | {
    f"/demo/{path.relative_to(WEB_ROOT).as_posix()}" for folder in SERVED_FOLDERS if folder.is_dir()
    for path in folder.iterdir() if path.suffix in MEDIA_TYPES})


def _file(name: str) -> Response:
    path = (WEB_ROOT / name).resolve()
    if path.parent not in SERVED_FOLDERS or path.suffix not in MEDIA_TYPES or not path.is_file():
        raise NotFound(f"no file /demo/{name}")
    return Response(path.read_bytes(), media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)


router = APIRouter(include_in_schema=False)


@router.get("/demo")
@router.get("/demo/")
async def page() -> Response:
    return _file("index.html")


@router.get("/demo/{name:path}")
async def asset(name: str) -> Response:
    return _file(name)
