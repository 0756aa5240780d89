"""fireplug: run any local command on a Docker host as if it ran locally (`fp`)."""

__version__ = "0.1.0"
