"""The app as uvicorn's workers build it: settings from ``KVSTORE_CONFIG`` and ``KVSTORE_*``.

``kvstore serve`` turns its flags into those variables, so one worker or many see the same
settings with the documented precedence (defaults < file < environment < flags).
"""

from starlette.types import ASGIApp

from kvstore import logs
from kvstore.config import load_settings
from kvstore.http.app import create_app


def app_from_environment() -> ASGIApp:
    settings = load_settings()
    logs.configure(settings.server.log_level)
    return create_app(settings)
