"""Run-folder files: atomic writes with ordinary permissions, no temporary files left behind."""

import errno
import json
import os
import stat

import pytest

from itc.results import (
    ResultsStore,
    RunFolderError,
    atomic_writer,
    read_json,
    write_json_atomic,
)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def test_atomic_writes_honour_the_umask_and_keep_a_files_mode(tmp_path, umask):
    write_json_atomic(tmp_path / "metrics.json", {"a": 1})
    assert _mode(tmp_path / "metrics.json") == 0o644
    umask(0o027)
    write_json_atomic(tmp_path / "run_config.json", {"a": 1})
    assert _mode(tmp_path / "run_config.json") == 0o640
    os.chmod(tmp_path / "metrics.json", 0o664)
    write_json_atomic(tmp_path / "metrics.json", {"a": 2})  # a rewrite keeps the file's mode
    assert _mode(tmp_path / "metrics.json") == 0o664 and read_json(tmp_path / "metrics.json") == {"a": 2}


def test_dropping_a_cut_off_line_keeps_the_results_mode(tmp_path, umask):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"problem_id": "a"}) + "\n" + '{"problem_id": "b", "cand')
    os.chmod(path, 0o644)
    store = ResultsStore(tmp_path)
    assert store.done_ids == {"a"} and path.read_text() == json.dumps({"problem_id": "a"}) + "\n"
    assert _mode(path) == 0o644


def test_a_failed_write_leaves_no_temporary_file_and_names_the_path(tmp_path, monkeypatch):
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "metrics.json", {"x": object()})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left") as e:
        write_json_atomic(tmp_path / "metrics.json", {"x": 1})
    assert e.value.filename == str(tmp_path / "metrics.json")
    with pytest.raises(OSError) as e:
        ResultsStore(tmp_path).append({"problem_id": "a"})
    assert e.value.filename == str(tmp_path / "results.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.jsonl"]


def test_temporaries_of_a_killed_write_are_removed_when_the_folder_is_opened(tmp_path):
    for name in (".metrics.json.1a2b3c4d.tmp", ".results.jsonl.00ff00ff.tmp", "notes.tmp"):
        (tmp_path / name).write_text("partial")
    ResultsStore(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tmp"]


def test_corrupt_files_are_errors_naming_file_and_line(tmp_path):
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.5, "n"')
    with pytest.raises(RunFolderError, match=r"metrics\.json:1: not valid JSON"):
        read_json(tmp_path / "metrics.json")
    lines = [json.dumps({"problem_id": str(i)}) for i in range(4)]
    lines[1] = lines[1][:10]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunFolderError, match=r"results\.jsonl:2: corrupt line in the middle"):
        ResultsStore(tmp_path)
    (tmp_path / "results.jsonl").write_bytes(b'{"problem_id": "0"}\n{"problem_id": "\xff"}\n{"problem_id": "2"}\n')
    with pytest.raises(RunFolderError, match=r"results\.jsonl:2: corrupt line"):
        ResultsStore(tmp_path)


def test_atomic_writer_writes_nothing_when_its_block_fails(tmp_path):
    (tmp_path / "f.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_writer(tmp_path / "f.txt") as f:
            f.write("new")
            raise RuntimeError
    assert (tmp_path / "f.txt").read_text() == "old" and len(list(tmp_path.iterdir())) == 1
