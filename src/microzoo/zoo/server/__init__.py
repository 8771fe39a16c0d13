"""The zoo's web server (a front end): ``create_app(zoo)`` gives the FastAPI app of ``microzoo serve``."""

from microzoo.zoo.server.app import create_app

__all__ = ["create_app"]
