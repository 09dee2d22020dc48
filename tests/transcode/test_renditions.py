import pytest

from transcode.errors import TranscodeError
from transcode.renditions import rungs_for


def test_rungs_below_the_source_only() -> None:
    assert [r.name for r in rungs_for([720, 480, 360], 1080)] == ["720p", "480p", "360p"]
    assert [r.name for r in rungs_for([360, 720], 720)] == ["360p"]  # never the source's own
    assert rungs_for([720, 480, 360], 240) == []  # never upscale
    assert rungs_for([720], None) == []
    with pytest.raises(TranscodeError, match="1080"):
        rungs_for([1080], 2160)
