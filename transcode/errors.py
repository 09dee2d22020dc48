"""The transcode package's exceptions."""


class TranscodeError(Exception):
    """Media could not be probed, segmented, cut or rendered."""
