"""Several writers creating the same index at once: serialised, nothing lost.

The race tests run the real ``semsearch`` command in separate processes, as a
pipeline would; the unit tests drive the creation's lock and clean-up directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from semsearch import Index
from semsearch.cli import EXIT_LOCKED, cli
from semsearch.errors import LockedError, SettingsConflictError
from semsearch.lock import LOCK_FILE, WriterLock
from tests.conftest import make_article

WRITERS = 4
ROUNDS = 2


def write_articles(folder: Path, writer: int) -> list[str]:
    """Two small articles whose ids (relative paths) no other writer uses."""
    folder.mkdir(parents=True)
    ids = []
    for n, topic in enumerate(("river gauges and flood warnings", "harbour cranes and freight")):
        name = f"w{writer}-{n}.md"
        (folder / name).write_text(f"Writer {writer} reports on {topic}, item {n}.\n")
        ids.append(name)
    return ids


def start_index(paths: Path, index: Path, wait: float, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "semsearch", "index", str(paths), "--index", str(index)]
    command += ["--wait", str(wait), "--quiet"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def check_index(index: Path, expected: set[str]) -> None:
    with Index.open(index) as opened:
        missing = sorted(i for i in expected if opened.get(i) is None)
        assert not missing, f"articles of runs that exited 0 are missing: {missing}"
        assert len(opened) == len(expected)
    verify = CliRunner().invoke(cli, ["verify", "--index", str(index), "--json"])
    assert verify.exit_code == 0, verify.output
    leftovers = [p.name for p in index.iterdir() if ".tmp" in p.name or ".old-" in p.name]
    assert not leftovers


def race(tmp_path: Path, env: dict[str, str], waits: list[float]) -> dict[int, int]:
    """Start one `semsearch index` per wait at once on a new folder; check the result."""
    index = tmp_path / "index"
    ids = {w: write_articles(tmp_path / f"in{w}", w) for w in range(len(waits))}
    runs = [start_index(tmp_path / f"in{w}", index, wait, env) for w, wait in enumerate(waits)]
    codes = {}
    for w, run in enumerate(runs):
        _, err = run.communicate(timeout=600)
        codes[w] = run.returncode
        assert run.returncode in (0, EXIT_LOCKED), err.decode()
        if run.returncode == EXIT_LOCKED:
            assert b"another writer holds" in err, err.decode()
    assert 0 in codes.values()
    check_index(index, {i for w, code in codes.items() if code == 0 for i in ids[w]})
    return codes


@pytest.mark.model
@pytest.mark.parametrize("round", range(ROUNDS))
def test_writers_creating_one_index_at_once_lose_nothing(tmp_path, round):
    # Half wait for the lock, half fail at once with 75; all start on a missing folder.
    waits = [600.0 if w % 2 == 0 else 0.0 for w in range(WRITERS)]
    codes = race(tmp_path, dict(os.environ), waits)
    assert all(codes[w] == 0 for w, wait in enumerate(waits) if wait)


@pytest.mark.model
def test_writers_exporting_to_an_empty_model_cache_at_once(tmp_path):
    # Two new indexes, one new cache: both exports of the model race in the cache.
    env = {**os.environ, "SEMSEARCH_CACHE": str(tmp_path / "cache")}
    ids = [write_articles(tmp_path / f"in{w}", w) for w in range(2)]
    runs = [start_index(tmp_path / f"in{w}", tmp_path / f"ix{w}", 0, env) for w in range(2)]
    for w, run in enumerate(runs):
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err.decode()
        check_index(tmp_path / f"ix{w}", set(ids[w]))
        assert json.loads((tmp_path / f"ix{w}" / "onnx" / "encoder.json").read_text())["dim"]
    entries = sorted(p.name for p in (tmp_path / "cache" / "onnx").iterdir())
    assert len([e for e in entries if not e.endswith(".lock")]) == 1, entries


def test_a_failed_creation_removes_only_what_it_made(tmp_path, fake_encoder):
    folder = tmp_path / "ix"
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's own file")
    with pytest.raises(RuntimeError), Index.creating(folder, encoder=fake_encoder):
        assert Index.exists(folder)
        raise RuntimeError("the first write failed")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", LOCK_FILE]
    assert not Index.exists(folder)


def test_a_failed_creation_removes_the_folder_it_made(tmp_path, fake_encoder):
    folder = tmp_path / "new" / "ix"
    with pytest.raises(RuntimeError), Index.creating(folder, encoder=fake_encoder) as index:
        index.add([])
        raise RuntimeError("the first write failed")
    assert not folder.exists()
    assert (tmp_path / "new").exists()  # a parent it made stays: it may hold others' folders


def test_creating_where_another_writer_holds_the_lock_touches_nothing(tmp_path, fake_encoder):
    folder = tmp_path / "ix"
    folder.mkdir()
    (folder / "store.sqlite").write_text("another process is writing this")
    with WriterLock(folder), pytest.raises(LockedError, match="another writer holds"):
        Index.create(folder, encoder=fake_encoder)
    assert (folder / "store.sqlite").read_text() == "another process is writing this"
    assert not Index.exists(folder)


def test_a_waiting_writer_finds_the_index_made_and_adds_to_it(tmp_path, fake_encoder):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.md").write_text("Gauges on five rivers.")
    folder = tmp_path / "ix"
    with Index.creating(folder, encoder=fake_encoder) as first, first:
        opened = Index.open(folder, encoder=fake_encoder)  # another writer's view, before
        opened.lock_timeout = 30
        added = []
        waiter = threading.Thread(target=lambda: added.append(opened.add_paths([tmp_path / "in"])))
        waiter.start()
        time.sleep(0.3)  # the waiter is blocked on the lock held by the creation
        assert not added
        first.add([])
    waiter.join()
    opened.close()
    assert added[0].added == 1
    with Index.open(folder, encoder=fake_encoder) as index:
        assert len(index) == 1


def test_a_writer_waiting_on_a_removed_lock_file_takes_the_new_one(tmp_path):
    folder = tmp_path / "ix"
    folder.mkdir()
    held, waiting = WriterLock(folder), WriterLock(folder, timeout=30, make_folder=True)
    held.__enter__()
    got = threading.Event()
    release = threading.Event()

    def wait() -> None:
        with waiting:
            got.set()
            release.wait(30)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)
    (folder / LOCK_FILE).unlink()  # what a failed creation does before it lets go
    folder.rmdir()
    held.__exit__(None, None, None)
    assert got.wait(30)
    with pytest.raises(LockedError), WriterLock(folder):  # the waiter holds the new file's
        pass
    release.set()
    thread.join()


def test_open_or_create_creates_then_opens_and_refuses_other_settings(tmp_path, fake_encoder):
    folder = tmp_path / "ix"
    article = make_article("a", "Alpha beta gamma.")
    with Index.open_or_create(folder, encoder=fake_encoder, index_type="flat") as index:
        assert index._writer.holds_lock  # the first add is part of the creation
        index.add([article])
    # Again, as a nightly job would: the same settings, or defaults spelt out, open it.
    for settings in ({"index_type": "flat"}, {"index_type": "auto", "overlap_tokens": 32}, {}):
        with Index.open_or_create(folder, encoder=fake_encoder, **settings) as index:
            assert not index._writer.holds_lock and len(index) == 1
    changed = {"index_type": "hnsw", "chunk_tokens": 9}
    with (
        pytest.raises(SettingsConflictError) as caught,
        Index.open_or_create(folder, encoder=fake_encoder, **changed),
    ):
        pass
    assert caught.value.conflicts == [
        ("index_type", "hnsw", "flat"),
        ("chunk_tokens", 9, fake_encoder.max_tokens),
    ]
    assert "index_type 'hnsw' (the index has 'flat')" in str(caught.value)


def test_open_or_create_removes_what_it_made_when_the_block_fails(tmp_path, fake_encoder):
    folder = tmp_path / "ix"
    with pytest.raises(RuntimeError), Index.open_or_create(folder, encoder=fake_encoder):
        raise RuntimeError("the first add failed")
    assert not folder.exists()
