"""Retention for admins: what expires when, holds, extensions, takedowns and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import HTTPException, Query, status
from fastapi import Path as FastPath

from api.deps import CurrentAdmin, RuntimeDep, catalog_work, store_work
from api.edge import edge_router
from api.routes.recordings import start_host_removal
from api.schemas import (
    ID_PATTERN,
    AdminRecording,
    AdminRecordingPage,
    AuditOut,
    ExtendIn,
    HoldIn,
    HostRemovalOut,
    Moment,
    Offset,
    PathId,
    SweepOut,
)
from storage.catalog import RecordingView, RetentionConflict
from storage.models import AuditEvent
from storage.sweeper import SweepReport

router = edge_router(prefix="/api/admin", tags=["admin"])

Status = Literal["live", "ended", "deleting", "expired", "taken_down"]
_CHANGE = {
    404: {"description": "no such recording"},
    409: {"description": "the change does not fit the recording's state (the detail says why)"},
}


def admin_recording(view: RecordingView, now: datetime) -> AdminRecording:
    rec = view.recording
    expires_in = None
    if rec.expires_at is not None and rec.status == "ended":
        expires_in = max(0, int((rec.expires_at - now).total_seconds()))
    return AdminRecording(
        id=rec.id,
        room_id=rec.room_id,
        title=rec.title,
        host=view.host,
        status=rec.status,
        held=rec.held,
        started_at=rec.started_at,
        ended_at=rec.ended_at,
        expires_at=rec.expires_at,
        expires_in_s=expires_in,
        objects=rec.object_count,
        bytes=rec.byte_count,
        delete_reason=rec.delete_reason,
    )


def audit_out(event: AuditEvent) -> AuditOut:
    return AuditOut.model_validate(event, from_attributes=True)


@router.get("/recordings")
async def list_recordings(
    _admin: CurrentAdmin,
    runtime: RuntimeDep,
    expiring_before: Annotated[Moment | None, Query()] = None,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> AdminRecordingPage:
    """Every recording, soonest expiry first, with its size: what will go, and when."""
    views, total = await catalog_work(
        runtime,
        runtime.catalog.retention_listing,
        expiring_before=expiring_before,
        status=status_,
        limit=limit,
        offset=offset,
    )
    now = runtime.catalog.now()
    return AdminRecordingPage(
        items=[admin_recording(v, now) for v in views], total=total, limit=limit, offset=offset
    )


async def _change(runtime, recording_id: str, action, **kwargs) -> AdminRecording:
    # Store work: with the lifecycle safety net on, a hold or release retags every object.
    try:
        await store_work(runtime, action, recording_id, **kwargs)
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no recording {recording_id}") from None
    except RetentionConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return await catalog_work(runtime, admin_view, runtime, recording_id)


def admin_view(runtime, recording_id: str, _changed: object = None) -> AdminRecording:
    view = runtime.catalog.recording_view(recording_id)
    return admin_recording(view, runtime.catalog.now())


@router.post("/recordings/{recording_id}/hold", responses=_CHANGE)
async def hold(
    recording_id: PathId, admin: CurrentAdmin, runtime: RuntimeDep, body: HoldIn | None = None
) -> AdminRecording:
    """A legal or moderation hold: the recording does not expire until released."""
    reason = body.reason if body else ""
    return await _change(runtime, recording_id, runtime.retention.hold, actor=admin, reason=reason)


@router.post("/recordings/{recording_id}/release", responses=_CHANGE)
async def release(recording_id: PathId, admin: CurrentAdmin, runtime: RuntimeDep) -> AdminRecording:
    """End a hold: it expires at the later of its expiry and one hour from now."""
    return await _change(runtime, recording_id, runtime.retention.release, actor=admin)


@router.post("/recordings/{recording_id}/extend", responses=_CHANGE)
async def extend(
    recording_id: PathId, body: ExtendIn, admin: CurrentAdmin, runtime: RuntimeDep
) -> AdminRecording:
    return await _change(
        runtime, recording_id, runtime.retention.extend, actor=admin, hours=body.hours
    )


@router.delete("/recordings/{recording_id}", responses=_CHANGE)
async def take_down(
    recording_id: PathId,
    admin: CurrentAdmin,
    runtime: RuntimeDep,
    include_derived: bool = False,
) -> AuditOut:
    """Take a recording down now, live or not: a live publisher is disconnected and its key
    revoked. With `include_derived`, the clips cut from it go too."""
    try:
        event = await runtime.retention.take_down(
            recording_id, actor=admin, include_derived=include_derived
        )
    except KeyError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no recording {recording_id}") from None
    except RetentionConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return audit_out(event)


@router.delete(
    "/recordings/{recording_id}/hosts/{seat}",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        404: {"description": "no such recording, or nobody recorded in that seat"},
        409: {"description": "not ended, or the only seat recorded"},
    },
)
async def remove_host(
    recording_id: PathId,
    seat: Annotated[int, FastPath(ge=1, le=32)],
    admin: CurrentAdmin,
    runtime: RuntimeDep,
) -> HostRemovalOut:
    """Remove one host from an ended recording, as its creator can (a consent request)."""
    return await start_host_removal(runtime, recording_id, seat, actor=admin, creator_id=None)


@router.get("/audit")
async def audit_log(
    _admin: CurrentAdmin,
    runtime: RuntimeDep,
    recording_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditOut]:
    """Every expiry, hold, release, extension and takedown, newest first."""
    events = await catalog_work(
        runtime, runtime.catalog.audit_log, recording_id=recording_id, limit=limit
    )
    return [audit_out(e) for e in events]


@router.post("/sweep")
async def sweep(_admin: CurrentAdmin, runtime: RuntimeDep, dry_run: bool = False) -> SweepOut:
    """Run the retention sweep now (it also runs every minute)."""
    report = await store_work(runtime, runtime.retention.sweep, dry_run=dry_run)
    return sweep_out(report, dry_run)


def sweep_out(report: SweepReport, dry_run: bool) -> SweepOut:
    return SweepOut(
        dry_run=dry_run,
        deleted=[audit_out(e) for e in report.expired],
        planned=[vars(p) for p in report.planned],
        failed=report.failed,
        seconds=round(report.seconds, 3),
    )
