"""The store: run folders plus an index (see DESIGN.md, "The store")."""

from transferlab.store.index import Index
from transferlab.store.run import Run, Store

__all__ = ["Index", "Run", "Store"]
