"""The storage package's exceptions. The API maps them to HTTP answers."""


class StorageError(Exception):
    """The object store or the catalog could not do what was asked."""


class ObjectNotFound(StorageError):
    """The key does not exist in the bucket."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key}")
        self.key = key


class StoreUnavailable(StorageError):
    """The store did not answer, even after retries."""


class RetentionConflict(StorageError):
    """A change that the recording's state does not allow (the API answers 409)."""
