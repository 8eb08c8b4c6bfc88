"""Reading movies and writing item outputs."""

from .movies import MovieReadError, open_movie

__all__ = ["MovieReadError", "open_movie"]
