"""The web service: a FastAPI app (page + JSON API) over the one protect path, with a bounded job queue.

Start it with ``onlymine serve``; build it in code with :func:`create_app` and a :class:`ServerConfig`.
"""

from onlymine.web.app import create_app
from onlymine.web.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
