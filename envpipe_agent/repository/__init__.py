"""Artefact repository backends behind one small interface (``Repository``)."""
from envpipe_agent.repository.base import (
    AlreadyExists,
    KeyNotFound,
    ObjectInfo,
    Repository,
    open_repository,
)

__all__ = ["AlreadyExists", "KeyNotFound", "ObjectInfo", "Repository", "open_repository"]
