"""The store: run folders plus an index (docs/ARCHITECTURE.md, "The store on disk")."""

from transferlab.store.index import Index
from transferlab.store.run import Run, Store

__all__ = ["Index", "Run", "Store"]
