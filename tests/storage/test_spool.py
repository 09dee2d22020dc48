"""The spool journal: one line per spooled segment, replayed while its file is there."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from storage.spool import JOURNAL, SpoolJournal, pending, remove_if_done


def spooled(directory: Path, name: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x47" * 188)
    return path


def test_lines_are_pending_while_their_file_is_there_in_the_order_written(tmp_path) -> None:
    directory = tmp_path / "rec"
    journal = SpoolJournal(directory)
    files = [spooled(directory, f"source-{i:06d}.ts") for i in range(3)]
    files.append(spooled(directory, "ladder/720p-000000.ts"))  # the ladder's, one level down
    for i, file in enumerate(files):
        journal.append({"key": f"k{i}", "sequence": i}, file)
    files[1].unlink()  # stored and indexed
    assert [(entry["key"], file) for entry, file in pending(directory)] == [
        ("k0", files[0]),
        ("k2", files[2]),
        ("k3", files[3]),
    ]
    journal.close()
    # Lines hold paths relative to the recording's directory: the spool may move.
    moved = tmp_path / "moved"
    directory.rename(moved)
    expected = [moved / f.relative_to(directory) for f in (files[0], files[2], files[3])]
    assert [file for _, file in pending(moved)] == expected


def test_a_line_cut_short_by_a_crash_and_a_broken_line_are_skipped(tmp_path, caplog) -> None:
    directory = tmp_path / "rec"
    journal = SpoolJournal(directory)
    a, b, _c = (spooled(directory, f"{n}.ts") for n in "abc")  # c: its line is torn
    journal.append({"key": "a"}, a)
    journal.close()
    with (directory / JOURNAL).open("ab") as f:
        f.write(b'{"no file": 1}\n"a string"\n')
    journal.append({"key": "b"}, b)  # reopened: appends after what is there
    journal.close()
    with (directory / JOURNAL).open("ab") as f:
        f.write(json.dumps({"key": "c", "file": "c.ts"}).encode()[:-3])  # killed mid-write
    assert [entry["key"] for entry, _ in pending(directory)] == ["a", "b"]
    for line in (2, 3, 5):
        assert f"line {line} is unreadable" in caplog.text


def test_appends_from_many_threads_stay_whole_lines(tmp_path) -> None:
    directory = tmp_path / "rec"
    journal = SpoolJournal(directory)
    file = spooled(directory, "x.ts")
    padding = "p" * 5000  # lines longer than a pipe's atomic write

    def write(thread: int) -> None:
        for i in range(200):
            journal.append({"thread": thread, "i": i, "padding": padding}, file)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.close()
    entries = [entry for entry, _ in pending(directory)]
    assert len(entries) == 800
    for t in range(4):
        assert [e["i"] for e in entries if e["thread"] == t] == list(range(200))


def test_a_sidecar_from_before_the_journal_is_still_pending(tmp_path) -> None:
    directory = tmp_path / "rec"
    segment = spooled(directory, "source-000004.ts")
    segment.with_suffix(".json").write_text(json.dumps({"key": "k4"}))
    spooled(directory, "source-000005.ts").with_suffix(".json").write_text("{not json")
    (directory / "source-000003.json").write_text(json.dumps({"key": "k3"}))  # its file is gone
    assert [(entry, file) for entry, file in pending(directory)] == [({"key": "k4"}, segment)]


def test_a_directory_goes_only_when_nothing_in_it_is_pending(tmp_path) -> None:
    directory = tmp_path / "rec"
    journal = SpoolJournal(directory)
    file = spooled(directory, "source-000000.ts")
    journal.append({"key": "k"}, file)
    spooled(directory, "ladder/720p-000009.ts")  # the ladder's, never closed: not in the journal
    (directory / "ladder" / "ladder.log").write_text("x")
    journal.close()
    assert not remove_if_done(directory)
    assert file.exists() and (directory / JOURNAL).exists()
    file.unlink()
    assert remove_if_done(directory)
    assert not directory.exists()
    assert remove_if_done(tmp_path / "never-made")
