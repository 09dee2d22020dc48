"""Bytes and keys: the S3-compatible object store, the embedded store, the catalog.

storage knows objects and rows, never codecs; it is the only package that imports boto3.
"""

from storage.catalog import Catalog
from storage.embedded import EmbeddedStore
from storage.errors import ObjectNotFound, StorageError, StoreUnavailable
from storage.presign import Presigner
from storage.store import ObjectInfo, ObjectStore, StoreConfig

__all__ = [
    "Catalog",
    "EmbeddedStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "Presigner",
    "StorageError",
    "StoreConfig",
    "StoreUnavailable",
]
