"""The ingest package's exceptions."""


class IngestError(Exception):
    """Live media could not be taken in."""


class ProtocolError(IngestError):
    """A publisher broke the protocol (RTMP, AMF0, FLV, HTTP push): the connection is closed."""


class PublishRefused(IngestError):
    """A publish was refused (unknown or revoked key, key already live): said to the publisher."""
