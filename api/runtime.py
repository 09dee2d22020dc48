"""Wiring: build the store and the catalog from settings, and tear them down in order."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from api.settings import Settings
from storage import Catalog, EmbeddedStore, ObjectStore, StoreConfig

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Runtime:
    settings: Settings
    store: ObjectStore
    catalog: Catalog
    embedded: EmbeddedStore | None = None

    def close(self) -> None:
        self.catalog.dispose()
        if self.embedded is not None:
            self.embedded.stop()
            log.info("embedded store stopped")


def store_config(settings: Settings, embedded: EmbeddedStore | None) -> StoreConfig:
    if embedded is not None:
        creds = embedded.credentials
        return StoreConfig(
            endpoint_url=embedded.endpoint_url,
            access_key_id=creds.access_key_id,
            secret_access_key=creds.secret_access_key,
            bucket=settings.bucket,
            region=settings.s3_region,
            path_style=True,
        )
    secret = settings.s3_secret_access_key
    return StoreConfig(
        endpoint_url=settings.s3_endpoint_url,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret else None,
        bucket=settings.bucket,
        region=settings.s3_region,
        path_style=settings.s3_path_style,
    )


def start_runtime(settings: Settings) -> Runtime:
    """Start the embedded store if no endpoint is set, make sure the bucket and schema exist."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedStore | None = None
    try:
        if settings.embedded_store:
            t0 = time.monotonic()
            log.info("starting embedded store (SeaweedFS) on 127.0.0.1:%s", settings.store_port)
            embedded = EmbeddedStore(settings.store_dir, port=settings.store_port)
            embedded.start()
            log.info("embedded store ready in %.1f s", time.monotonic() - t0)
        store = ObjectStore(store_config(settings, embedded))
        store.ensure_bucket()
        log.info("bucket %s ready at %s", settings.bucket, store.config.endpoint_url or "AWS S3")
        catalog = Catalog(settings.catalog_url)
        catalog.create_schema()
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
    return Runtime(settings=settings, store=store, catalog=catalog, embedded=embedded)
