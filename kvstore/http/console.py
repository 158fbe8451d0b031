"""The web console at ``/ui``: a page, a script and a style sheet shipped in the package.

Plain HTML, CSS and vanilla JavaScript, no framework and no build step: nothing to fetch at build
or run time, nothing to keep patched, and the whole console is three files a reviewer can read.
The files are read once when the app is built and served from memory.

The page shows keys and values, which are untrusted: the script builds the DOM with
``textContent`` only, and every answer here carries a Content-Security-Policy that allows
scripts, styles and requests from this origin alone (no inline script or style, no ``eval``), so
a value that smuggled markup in could still not run it. The console only reads: it needs a token
with the ``read`` scope where tokens are configured, and keeps it in ``sessionStorage``.
"""

from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kvstore.http.endpoints import CONSOLE, CONSOLE_FILES
from kvstore.http.problems import problem

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate, so an upgraded server serves its own console
}
INDEX = "index.html"


def console_files() -> dict[str, tuple[bytes, str]]:
    """Every file of the console by name, with its media type."""
    found = {}
    for entry in files("kvstore.http").joinpath("console").iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in _TYPES:
            found[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return found


def console_routes() -> list[Route]:
    served = console_files()

    async def serve(request: Request) -> Response:
        name = request.path_params.get("file") or INDEX
        found = served.get(name)
        if found is None:
            return problem(404, f"the console has no file {name[:80]!r}")
        body, media_type = found
        return Response(body, media_type=media_type, headers=SECURITY_HEADERS)

    return [
        Route(CONSOLE.path, serve, methods=list(CONSOLE.methods)),
        Route(CONSOLE_FILES.path.replace("{file}", "{file:path}"), serve, methods=list(CONSOLE_FILES.methods)),
    ]
