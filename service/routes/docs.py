"""`GET /docs`: Swagger UI for `/swagger.json`, every file from this package, nothing from a CDN.

FastAPI's own page loads Swagger UI from a CDN, unpinned and without integrity, and starts it with an
inline script; on the origin where the demo page keeps an API key in sessionStorage, whoever served
that script could read the key. Here the bundle is package-lock.json's swagger-ui-dist, checked
against its integrity hash and copied into web/vendor/swagger-ui/ by scripts/vendor_web.py, and the
page runs only this origin's scripts, under a policy like the demo page's.

Whether these paths need credentials is the app's `API_DOCS` (`PATHS` are open with `open`).
"""

from __future__ import annotations


from fastapi import APIRouter
from fastapi.responses import Response

from service.errors import NotFound
from service.routes.demo import WEB_ROOT

VENDOR = WEB_ROOT / "vendor" / "swagger-ui"
# path -> (file, media type): these and no other files.
FILES = {
    "/docs": (WEB_ROOT / "docs" / "index.html", "text/html; charset=utf-8"),
    "/docs/swagger-init.js": (WEB_ROOT / "docs" / "swagger-init.js", "text/javascript; charset=utf-8"),
    "/docs/swagger-ui-bundle.js": (VENDOR / "swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "/docs/swagger-ui.css": (VENDOR / "swagger-ui.css", "text/css; charset=utf-8"),
}
PATHS = frozenset(FILES)
HEADERS = {
    # Swagger UI's style sheet draws its icons as data: SVG images; nothing else is allowed beyond this origin.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/docs")
@router.get("/docs/{name}")
async def docs_file(name: str = "") -> Response:
    path = f"/docs/{name}" if name else "/docs"
    if path not in FILES or not FILES[path][0].is_file():  # not vendored: `make setup` copies Swagger UI
        raise NotFound(f"no file {path}")
    file, media_type = FILES[path]
    return Response(file.read_bytes(), media_type=media_type, headers=HEADERS)
