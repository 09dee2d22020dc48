"""The object store: any S3-compatible endpoint, behind a small API of bytes and keys.

This is the only module of afterlive that imports boto3. Callers see `ObjectInfo`, bytes, keys and
the exceptions of `storage.errors`, never a botocore type.

Retries: botocore's "standard" retry mode already retries what is transient (connection errors,
timeouts, 5xx, throttling) with capped exponential backoff and jitter; we configure it rather than
write a second retry loop around it. What is left after the retries becomes a `StorageError` that
names the operation and the key.

PutObject below the multipart threshold (every segment and playlist of a live room) goes through
`storage.s3put.S3Put` instead, a lean SigV4 client over `storage.http1` with the same retry
policy, when it is checked at start to send what botocore would; see `_putter`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.awsrequest import AWSPreparedRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, ReadTimeoutError
from botocore.httpsession import get_cert_path

from storage import lifecycle
from storage.errors import ObjectNotFound, StorageError, StoreUnavailable
from storage.keys import kind_of
from storage.presign import Presigner, PresignUnsupported
from storage.s3put import PutUnsupported, Redirected, S3Put

log = logging.getLogger(__name__)

# S3 caps DeleteObjects at 1,000 keys per request.
DELETE_BATCH = 1000
# S3's smallest part (except the last) is 5 MiB.
MIN_PART_SIZE = 5 * 1024 * 1024
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_EPHEMERAL_TAG = f"{lifecycle.TAG_KEY}={lifecycle.EPHEMERAL}"


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """Where the store is and how to talk to it. Built by the edge (settings), never read here."""

    endpoint_url: str | None
    access_key_id: str | None
    secret_access_key: str | None
    bucket: str
    region: str = "us-east-1"
    path_style: bool = True
    multipart_threshold: int = 16 * 1024 * 1024
    multipart_chunk_size: int = 8 * 1024 * 1024
    max_attempts: int = 4
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 30.0
    max_connections: int = 32
    # Round presigned URLs' signing time down to this many seconds (0 = none), so that one key
    # gives one URL per window; see `storage.presign.Presigner`. TTLs must then exceed it.
    presign_bucket_s: int = 0
    # Tag every object of a recording for the lifecycle safety net (storage.lifecycle).
    retention_tags: bool = False


@dataclass(frozen=True, kw_only=True)
class ObjectInfo:
    key: str
    size: int
    etag: str = ""
    last_modified: datetime | None = None
    content_type: str | None = None
    cache_control: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class ObjectStore:
    """One bucket of an S3-compatible store. Thread-safe: boto3 clients are."""

    def __init__(self, config: StoreConfig) -> None:
        if config.multipart_chunk_size < MIN_PART_SIZE:
            raise ValueError(f"multipart_chunk_size must be >= {MIN_PART_SIZE} bytes (S3 minimum)")
        self.config = config
        self.bucket = config.bucket
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint_url,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            region_name=config.region,
            config=botocore_config(config),
        )
        # Requests sent per operation and failures per operation, for metrics and tests.
        self.requests: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self._transfer = TransferConfig(
            multipart_threshold=config.multipart_threshold,
            multipart_chunksize=config.multipart_chunk_size,
            max_concurrency=4,
        )
        self.presigner = _presigner(config, self._client)
        # PutObject without botocore's pipeline, where it sends what botocore would (see _putter).
        self.putter = _putter(config, self._client)

    # -- bucket ---------------------------------------------------------------------------------

    def ensure_bucket(self, *, cors_origins: Iterable[str] = ("*",)) -> None:
        """Create the bucket if it is missing and allow browsers to GET media from it."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND | {"NoSuchBucket"}:
                raise self._error("head_bucket", "", exc) from exc
            log.info("creating bucket %s", self.bucket)
            try:
                self._client.create_bucket(Bucket=self.bucket)
            except ClientError as create_exc:
                if _code(create_exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise self._error("create_bucket", "", create_exc) from create_exc
        except BotoCoreError as exc:
            raise self._error("head_bucket", "", exc) from exc
        origins = list(cors_origins)
        if origins:
            self._call(
                "put_bucket_cors",
                "",
                self._client.put_bucket_cors,
                Bucket=self.bucket,
                CORSConfiguration={
                    "CORSRules": [
                        {
                            "AllowedOrigins": origins,
                            "AllowedMethods": ["GET", "HEAD"],
                            "AllowedHeaders": ["*"],
                            "ExposeHeaders": ["ETag", "Content-Length", "Content-Range"],
                            "MaxAgeSeconds": 3600,
                        }
                    ]
                },
            )

    def cors_rules(self) -> list[dict]:
        reply = self._call("get_bucket_cors", "", self._client.get_bucket_cors, Bucket=self.bucket)
        return reply.get("CORSRules", [])

    def lifecycle_rules(self) -> list[dict]:
        try:
            reply = self._client.get_bucket_lifecycle_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) == "NoSuchLifecycleConfiguration":
                return []
            raise self._error("get_bucket_lifecycle", "", exc) from exc
        except BotoCoreError as exc:
            raise self._error("get_bucket_lifecycle", "", exc) from exc
        return reply.get("Rules", [])

    def put_lifecycle_rule(self, rule: dict) -> list[dict]:
        """Add or replace one rule (by its ID), keeping the bucket's other rules."""
        rules = [r for r in self.lifecycle_rules() if r.get("ID") != rule["ID"]] + [rule]
        self._call(
            "put_bucket_lifecycle",
            "",
            self._client.put_bucket_lifecycle_configuration,
            Bucket=self.bucket,
            LifecycleConfiguration={"Rules": rules},
        )
        return rules

    def retention_tag(self, key: str) -> str | None:
        reply = self._call(
            "get_tagging", key, self._client.get_object_tagging, Bucket=self.bucket, Key=key
        )
        tags = {t["Key"]: t["Value"] for t in reply.get("TagSet", [])}
        return tags.get(lifecycle.TAG_KEY)

    def set_retention_tag(self, prefix: str, value: str, *, workers: int = 8) -> int:
        """Tag every object under `prefix` (held / ephemeral); returns how many."""
        keys = [info.key for info in self.list(prefix)]
        with ThreadPoolExecutor(workers, thread_name_prefix="tag") as pool:
            list(pool.map(lambda key: self._put_tagging(key, value), keys))
        return len(keys)

    def _put_tagging(self, key: str, value: str) -> None:
        self._call(
            "put_tagging",
            key,
            self._client.put_object_tagging,
            Bucket=self.bucket,
            Key=key,
            Tagging={"TagSet": [{"Key": lifecycle.TAG_KEY, "Value": value}]},
        )

    def impatient(self, *, timeout_s: float, attempts: int = 1) -> ObjectStore:
        """The same bucket through a client that gives up sooner: `timeout_s` to connect and
        between bytes, `attempts` tries. For callers who answer a person now (health, playlists);
        uploads keep the patient client, whose four tries of 30 s last two minutes against a
        hung store. Operations are counted with this store's."""
        config = replace(
            self.config,
            connect_timeout_s=timeout_s,
            read_timeout_s=timeout_s,
            max_attempts=attempts,
        )
        other = ObjectStore(config)
        other.requests, other.failures = self.requests, self.failures
        return other

    def ping(self) -> None:
        """Raise unless the bucket answers."""
        self._call("head_bucket", "", self._client.head_bucket, Bucket=self.bucket)

    # -- write ----------------------------------------------------------------------------------

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        cache_control: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        kind = kind_of(key)
        content_type = content_type or kind.content_type
        cache_control = cache_control or kind.cache_control
        tagging = _EPHEMERAL_TAG if self.config.retention_tags and lifecycle.tagged(key) else None
        putter = self.putter
        redirected: Redirected | None = None
        # The hot path (segments and playlists): the lean client. Metadata is rare: botocore.
        if putter is not None and not metadata:
            try:
                etag = putter.put(
                    key,
                    data,
                    content_type=content_type,
                    cache_control=cache_control,
                    tagging=tagging,
                )
            except Redirected as exc:
                redirected = exc  # botocore follows S3's region redirects; let it try
            except StorageError:
                self.requests["put"] += 1
                self.failures["put"] += 1
                raise
            else:
                self.requests["put"] += 1
                return ObjectInfo(key=key, size=len(data), etag=etag)
        extra: dict = {"Metadata": metadata} if metadata else {}
        if tagging:
            extra["Tagging"] = tagging
        reply = self._call(
            "put",
            key,
            self._client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            CacheControl=cache_control,
            **extra,
        )
        if redirected is not None:
            log.warning(
                "bucket %s: PUTs through botocore from now on, it followed what the lean client "
                "could not (%s)",
                self.bucket,
                redirected,
            )
            self.putter = None
        return ObjectInfo(key=key, size=len(data), etag=reply.get("ETag", "").strip('"'))

    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        cache_control: str | None = None,
    ) -> ObjectInfo:
        """Upload a file; multipart (parallel parts) at or above the configured threshold."""
        path = Path(path)
        size = path.stat().st_size
        if size < self.config.multipart_threshold:
            return self.put_bytes(
                key, path.read_bytes(), content_type=content_type, cache_control=cache_control
            )
        kind = kind_of(key)
        self._call(
            "put_multipart",
            key,
            self._client.upload_file,
            Filename=str(path),
            Bucket=self.bucket,
            Key=key,
            ExtraArgs={
                "ContentType": content_type or kind.content_type,
                "CacheControl": cache_control or kind.cache_control,
            }
            | (
                {"Tagging": _EPHEMERAL_TAG}
                if self.config.retention_tags and lifecycle.tagged(key)
                else {}
            ),
            Config=self._transfer,
        )
        if self.config.retention_tags and lifecycle.tagged(key):
            # Ceph 16 drops the tagging header of CreateMultipartUpload: tag the result.
            self._put_tagging(key, lifecycle.EPHEMERAL)
        # Never trust CompleteMultipartUpload's ETag (Ceph 16 answers it empty): ask the store.
        info = self.head(key)
        if info is None or info.size != size:
            raise StorageError(f"put_multipart {key}: store holds {info and info.size} of {size} B")
        return info

    def copy(self, src_key: str, dst_key: str) -> ObjectInfo:
        """Server-side copy; content type and cache policy travel with the object."""
        reply = self._call(
            "copy",
            f"{src_key} -> {dst_key}",
            self._client.copy_object,
            Bucket=self.bucket,
            Key=dst_key,
            CopySource={"Bucket": self.bucket, "Key": src_key},
            MetadataDirective="COPY",
        )
        etag = reply.get("CopyObjectResult", {}).get("ETag", "").strip('"')
        info = self.head(dst_key)
        if info is None:
            raise StorageError(f"copy {src_key} -> {dst_key}: destination missing after copy")
        return ObjectInfo(**{**info.__dict__, "etag": info.etag or etag})

    # -- read -----------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        reply = self._call("get", key, self._client.get_object, Bucket=self.bucket, Key=key)
        return self._read_body("get", key, reply)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes start..end inclusive, as HTTP ranges count them."""
        if start < 0 or end < start:
            raise ValueError(f"bad range {start}-{end}")
        reply = self._call(
            "get_range",
            key,
            self._client.get_object,
            Bucket=self.bucket,
            Key=key,
            Range=f"bytes={start}-{end}",
        )
        return self._read_body("get_range", key, reply)

    def download(self, key: str, path: str | os.PathLike[str]) -> None:
        self._call(
            "download",
            key,
            self._client.download_file,
            Bucket=self.bucket,
            Key=key,
            Filename=str(path),
            Config=self._transfer,
        )

    def head(self, key: str) -> ObjectInfo | None:
        """The object's facts, or None if it does not exist."""
        try:
            reply = self._call("head", key, self._client.head_object, Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            return None
        return ObjectInfo(
            key=key,
            size=reply["ContentLength"],
            etag=reply.get("ETag", "").strip('"'),
            last_modified=reply.get("LastModified"),
            content_type=reply.get("ContentType"),
            cache_control=reply.get("CacheControl"),
            metadata=reply.get("Metadata", {}),
        )

    def list(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[ObjectInfo]:
        """Every object under a prefix, in key order, following continuation tokens."""
        token: str | None = None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": page_size}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list", prefix, self._client.list_objects_v2, **kwargs)
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    key=item["Key"],
                    size=item["Size"],
                    etag=item.get("ETag", "").strip('"'),
                    last_modified=item.get("LastModified"),
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def presign_get(self, key: str, ttl_s: int) -> str:
        """A URL anyone can GET for `ttl_s` seconds, with no other credentials.

        Signed locally, no request is sent. With `presign_bucket_s` set, the URL is valid for
        between `ttl_s - presign_bucket_s` and `ttl_s` seconds (see `Presigner`).
        """
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if self.presigner is not None:
            return self.presigner.url(key, ttl_s)
        return self._call(
            "presign",
            key,
            self._client.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=ttl_s,
        )

    # -- delete ---------------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        self._call("delete", key, self._client.delete_object, Bucket=self.bucket, Key=key)

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete keys in batches of 1,000; deleting a missing key succeeds (idempotent).

        Returns how many keys were sent for deletion. Raises if the store refused any of them.
        """
        count = 0
        batch: list[str] = []
        for key in keys:
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                count += self._delete_batch(batch)
                batch = []
        if batch:
            count += self._delete_batch(batch)
        return count

    def delete_prefix(self, prefix: str) -> tuple[int, int]:
        """Delete everything under a prefix; returns (objects, bytes) deleted."""
        if not prefix:
            raise ValueError("refusing to delete the whole bucket")
        total_bytes = 0

        def keys() -> Iterator[str]:
            nonlocal total_bytes
            for info in self.list(prefix):
                total_bytes += info.size
                yield info.key

        count = self.delete_many(keys())
        return count, total_bytes

    def _delete_batch(self, batch: list[str]) -> int:
        reply = self._call(
            "delete_many",
            f"{batch[0]} (+{len(batch) - 1})",
            self._client.delete_objects,
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
        )
        errors = [e for e in reply.get("Errors", []) if e.get("Code") != "NoSuchKey"]
        if errors:
            first = errors[0]
            raise StorageError(
                f"delete_many: {len(errors)} of {len(batch)} keys refused, "
                f"first {first.get('Key')}: {first.get('Code')} {first.get('Message')}"
            )
        return len(batch)

    # -- plumbing -------------------------------------------------------------------------------

    def _call(self, op: str, key: str, fn, *args, **kwargs):
        self.requests[op] += 1
        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            self.failures[op] += 1
            raise self._error(op, key, exc) from exc

    def _read_body(self, op: str, key: str, reply: dict) -> bytes:
        try:
            with reply["Body"] as body:
                return body.read()
        except (BotoCoreError, OSError) as exc:
            raise self._error(op, key, exc) from exc

    def _error(self, op: str, key: str, exc: Exception) -> StorageError:
        where = f"{op} {self.bucket}/{key}" if key else f"{op} {self.bucket}"
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code in _NOT_FOUND and op in {"get", "get_range", "head", "download", "copy"}:
                return ObjectNotFound(key)
            message = exc.response.get("Error", {}).get("Message", "")
            return StorageError(f"{where}: {code} {message}".rstrip())
        if isinstance(exc, ConnectionError | ReadTimeoutError):
            endpoint = self.config.endpoint_url or "AWS S3"
            return StoreUnavailable(f"{where}: store at {endpoint} did not answer: {exc}")
        return StorageError(f"{where}: {exc}")


# A key that exercises the path quoting, for the one-off comparison with botocore.
_PROBE_KEY = "afterlive/presign probe+=~é.ts"
_CAPTURE_ID = "afterlive-put-probe"


def _presigner(config: StoreConfig, client) -> Presigner | None:
    """Our fast presigner, or None where only botocore can sign right.

    botocore also takes endpoints, FIPS or dual-stack hosts from the environment and ~/.aws/config
    (AWS_ENDPOINT_URL, say, when `endpoint_url` is None); the presigner follows StoreConfig alone.
    So one URL is compared with botocore's at botocore's own X-Amz-Date: if they differ, the
    presigner would send players somewhere else than the client writes to, and botocore signs.
    """
    try:
        presigner = Presigner(config, bucket_s=config.presign_bucket_s)
    except PresignUnsupported as exc:
        log.info("presigning for bucket %s through botocore: %s", config.bucket, exc)
        return None
    try:
        theirs = client.generate_presigned_url(
            "get_object", Params={"Bucket": config.bucket, "Key": _PROBE_KEY}, ExpiresIn=3600
        )
        signed_at = parse_qs(urlsplit(theirs).query)["X-Amz-Date"][0]
        at = datetime.strptime(signed_at, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except (BotoCoreError, ClientError, KeyError, ValueError) as exc:
        log.warning(
            "presigning for bucket %s through botocore: no probe URL (%s)", config.bucket, exc
        )
        return None
    ours = Presigner(config, bucket_s=0).url(_PROBE_KEY, 3600, now=at)
    if ours != theirs:
        log.warning(
            "presigning for bucket %s through botocore: it signs for %s, StoreConfig says %s",
            config.bucket,
            urlsplit(theirs).netloc,
            urlsplit(ours).netloc,
        )
        return None
    return presigner


class _Captured(Exception):
    """Stops a botocore request just before it is sent, carrying it out."""

    def __init__(self, request: AWSPreparedRequest) -> None:
        super().__init__("captured")
        self.request = request


def _capture(request: AWSPreparedRequest, **_: object) -> None:
    raise _Captured(request)


def _putter(config: StoreConfig, client) -> S3Put | None:
    """Our lean PUT client, or None where only botocore can PUT right.

    Compared with botocore once: botocore builds and signs a put_object of a probe key (stopped
    before anything is sent); ours must give the same URL and, signed at botocore's X-Amz-Date
    with botocore's payload hash, the same Authorization header, so the same endpoint, region,
    addressing, key quoting and signed headers. And the transport botocore would use for that
    URL: a proxy or a client certificate (from the environment or ~/.aws/config) leaves PUTs to
    botocore; for HTTPS the lean client takes botocore's CA bundle.
    """
    if not config.access_key_id or not config.secret_access_key:
        log.info("PUTs to bucket %s through botocore: no static credentials", config.bucket)
        return None
    probe_kind = kind_of(_PROBE_KEY)
    events = client.meta.events
    events.register_first("before-send.s3.PutObject", _capture, unique_id=_CAPTURE_ID)
    try:
        client.put_object(
            Bucket=config.bucket,
            Key=_PROBE_KEY,
            Body=b"probe",
            ContentType=probe_kind.content_type,
            CacheControl=probe_kind.cache_control,
            Tagging=_EPHEMERAL_TAG,
        )
    except _Captured as captured:
        theirs = captured.request
    except (BotoCoreError, ClientError) as exc:
        log.warning("PUTs to bucket %s through botocore: no probe request (%s)", config.bucket, exc)
        return None
    else:
        return None  # sent, not captured: botocore no longer emits before-send
    finally:
        events.unregister("before-send.s3.PutObject", unique_id=_CAPTURE_ID)
    try:
        transport = client._endpoint.http_session  # read once: botocore has no public accessor
        proxy = transport._proxy_config.proxy_url_for(theirs.url)
        cert_file, verify = transport._cert_file, transport._verify
    except AttributeError as exc:
        log.warning(
            "PUTs to bucket %s through botocore: unknown transport (%s)", config.bucket, exc
        )
        return None
    if proxy or cert_file or verify is False:
        log.info(
            "PUTs to bucket %s through botocore: proxy %s, client certificate %s, verify %s",
            config.bucket,
            proxy,
            cert_file,
            verify,
        )
        return None
    if verify is True:
        verify = get_cert_path(True)
    ca = {"ca_cert_dir": verify} if verify and os.path.isdir(verify) else {"ca_certs": verify}
    try:
        putter = S3Put(config, **ca)
    except PutUnsupported as exc:
        log.info("PUTs to bucket %s through botocore: %s", config.bucket, exc)
        return None
    headers = {
        k.lower(): v.decode() if isinstance(v, bytes) else str(v) for k, v in theirs.headers.items()
    }
    _, ours = putter.prepare(
        _PROBE_KEY,
        b"probe",
        content_type=probe_kind.content_type,
        cache_control=probe_kind.cache_control,
        tagging=_EPHEMERAL_TAG,
        amz_date=headers.get("x-amz-date"),
        payload_hash=headers.get("x-amz-content-sha256"),
    )
    if (theirs.method, theirs.url, headers.get("authorization")) != (
        "PUT",
        putter.url(_PROBE_KEY),
        ours["Authorization"],
    ):
        log.warning(
            "PUTs to bucket %s through botocore: it sends %s %s, the lean client %s",
            config.bucket,
            theirs.method,
            theirs.url,
            putter.url(_PROBE_KEY),
        )
        putter.close()
        return None
    return putter


def botocore_config(config: StoreConfig) -> Config:
    """The client settings afterlive uses for every store (shared with the benchmark's peer)."""
    return Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if config.path_style else "auto"},
        retries={"mode": "standard", "total_max_attempts": config.max_attempts},
        connect_timeout=config.connect_timeout_s,
        read_timeout=config.read_timeout_s,
        max_pool_connections=config.max_connections,
        # Only compute/validate checksums where S3 requires them: several S3-compatible servers
        # reject or mishandle the newer default CRC trailers.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )
