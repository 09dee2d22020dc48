"""Front doors for live media: RTMP server, HTTP push, publish sessions, the room recorder.

Built by the live-ingest issue; nothing here yet beyond the package.
"""
