"""The shared, content-addressed output store (``docs/store.md``).

``store.py`` is the store itself over fsspec (layout, create-once objects, records, where
the store is); ``upload.py`` uploads in the background with retries; ``sync.py`` joins a
run to it (look up before submitting, upload after downloading, push, pull).
"""

from runner.store.store import (
    STORE_VAR,
    Store,
    StoredOutput,
    StoreRecord,
    open_store,
    shown,
    store_location,
)

__all__ = ["STORE_VAR", "Store", "StoreRecord", "StoredOutput", "open_store", "shown",
           "store_location"]
