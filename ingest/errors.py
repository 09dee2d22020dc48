"""The ingest package's exceptions."""


class IngestError(Exception):
    """Live media could not be taken in."""


class ProtocolError(IngestError):
    """A publisher broke the protocol (RTMP, AMF0, FLV, HTTP push): the connection is closed."""


class PublishRefused(IngestError):
    """A publish was refused before any media was stored; the publisher is told why.

    `code` is the RTMP status code sent in onStatus; `http_status` the answer to an HTTP push.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "NetStream.Publish.Denied",
        http_status: int = 403,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class UnknownStreamKey(PublishRefused):
    def __init__(self) -> None:
        super().__init__("unknown or revoked stream key", http_status=403)


class AlreadyLive(PublishRefused):
    """A second publisher on a seat that is live (a key is one seat of one room)."""

    def __init__(self) -> None:
        super().__init__(
            "this stream key is already live from another publisher",
            code="NetStream.Publish.BadName",
            http_status=409,
        )


class NodeBusy(PublishRefused):
    """This node takes no new live now (room limit, or uploads behind): answered before any
    media is stored, so a publisher or a load balancer can try again or go elsewhere."""

    def __init__(self, why: str) -> None:
        super().__init__(
            f"this ingest node takes no new live now: {why}; try again in a minute",
            code="NetStream.Publish.Denied",
            http_status=503,
        )


class PublishEnded(IngestError):
    """This node ends a live publish on its own side (a takedown, a full spool disk): the
    publisher is told why (`code` in an RTMP onStatus error, `http_status` to an HTTP push),
    and the recording ends with what it has. Not the publisher's fault: never logged as a
    protocol error."""

    # The whole live ends (every seat), or only this publisher's seat.
    ends_live = True

    def __init__(self, message: str, *, code: str, http_status: int) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


class SeatRemoved(PublishEnded):
    """The room's creator removed this host while they were live: their seat ends (what it
    recorded stays), the room's live goes on with the others."""

    ends_live = False

    def __init__(self) -> None:
        super().__init__(
            "the room's creator removed you from the room; your key no longer publishes",
            code="NetStream.Publish.Denied",
            http_status=403,
        )


class TakenDown(PublishEnded):
    """An admin took the recording down while live: the publisher is disconnected."""

    def __init__(self) -> None:
        super().__init__(
            "this live was taken down by an admin; its stream key is revoked",
            code="NetStream.Publish.Denied",
            http_status=410,
        )


class SpoolFull(PublishEnded):
    """The spool disk has too little room left for more media: the live ends with what was
    kept (everything up to the last whole segment), and new lives are refused meanwhile."""

    def __init__(self, why: str) -> None:
        super().__init__(
            f"this ingest node's disk is full: {why}. The recording ends here with what was "
            "kept; publish again later or to another node",
            code="NetStream.Record.DiskQuotaExceeded",
            http_status=507,
        )


class HostRemoved(PublishRefused):
    """The key of a host whom the room's creator removed from the room."""

    def __init__(self) -> None:
        super().__init__(
            "this host was removed from the room; its key no longer publishes (ask the room's "
            "creator for a new invitation)",
            http_status=403,
        )


class SeatClosed(PublishRefused):
    """A host key for a seat beyond the room's seats (the node's seat setting went down)."""

    def __init__(self, seat: int, seats: int, kind: str) -> None:
        super().__init__(
            f"seat {seat} is beyond the {seats} seats of a {kind} room on this node",
            http_status=403,
        )
