"""Pipeline-grade writes: idempotent, pruned, locked, crash-safe, readable while written.

Writers killed with SIGKILL run in child processes (the fake encoder: these
test the index's bookkeeping, not search quality).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from semsearch import IncompatibleIndexError, Index, MergePolicy, SemsearchError
from semsearch.errors import LockedError
from semsearch.lock import WriterLock
from semsearch.verify import verify
from tests.conftest import ROOT, make_article

OLD = {f"a{i}": f"Old text number {i} about harbours and ferries." for i in range(6)}
NEW = {**{f"a{i}": f"New text {i} on orchards and apples." for i in range(3, 8)}}


def _articles(texts: dict[str, str]) -> list:
    return [make_article(i, t) for i, t in texts.items()]


def _content(folder: Path, encoder) -> dict[str, str]:
    with Index.open(folder, encoder=encoder) as index:
        hits = index.search("text", k=100, mode="keyword")
        return {h.article_id: index.get(h.article_id).text for h in hits}


def test_indexing_the_same_folder_twice_embeds_nothing_the_second_time(tmp_path, fake_encoder):
    folder = tmp_path / "articles"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text(f"Title {i}\n\nBody of article {i}. Second sentence.")
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        first = index.add_paths([folder])
        generation = index._generation
        second = index.add_paths([folder])
        assert (second.added, second.updated, second.unchanged) == (0, 0, 4)
        assert second.chunks_added == second.chunks_removed == 0
        assert index._generation == generation  # no commit at all
        (folder / "2.txt").write_text("Title 2\n\nA rewritten body.")
        third = index.add_paths([folder])
        assert (third.updated, third.unchanged, third.chunks_added) == (1, 3, 1)
        assert third.chunks_removed == 1 and index.info().chunks == first.chunks_added


def test_prune_removes_articles_whose_files_are_gone(tmp_path, fake_encoder):
    folder = tmp_path / "articles"
    folder.mkdir()
    for name in ("keep", "drop"):
        (folder / f"{name}.txt").write_text(f"{name} body text.")
    (folder / "rows.jsonl").write_text('{"id": "r1", "text": "one"}\n{"id": "r2", "text": "two"}\n')
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        index.add_paths([folder])
        (folder / "drop.txt").unlink()
        (folder / "rows.jsonl").write_text('{"id": "r1", "text": "one"}\n')
        result = index.add_paths([folder], prune=True)
        assert result.removed == 2
        assert index.get("drop.txt") is None and index.get("r2") is None
        assert index.get("keep.txt") is not None and len(index) == 2


def test_prune_keeps_the_articles_of_a_file_with_a_bad_row(tmp_path, fake_encoder):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "r1", "text": "one"}\n{"id": "r2", "text": "two"}\n')
    with Index.create(tmp_path / "ix", encoder=fake_encoder) as index:
        index.add_paths([rows])
        rows.write_text('{"id": "r1", "text": "one"}\n{not json\n')
        result = index.add_paths([rows], prune=True)
        assert result.removed == 0 and result.skipped and len(index) == 2


def test_a_second_writer_fails_at_once_naming_the_holder(fake_index):
    with WriterLock(fake_index.path), pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        fake_index.add(_articles(OLD))
    fake_index.add(_articles(OLD))  # released: the write goes ahead
    assert len(fake_index) == 6


def test_a_second_writer_can_wait_for_the_first(fake_index):
    lock = WriterLock(fake_index.path).__enter__()
    threading.Timer(0.3, lock.__exit__, (None, None, None)).start()
    fake_index.lock_timeout = 10
    fake_index.add(_articles(OLD))
    assert len(fake_index) == 6


_WRITER = """
import sys
from semsearch import Index, MergePolicy
from tests.conftest import FakeEncoder, make_article
folder, action = sys.argv[1], sys.argv[2]
with Index.open(folder, encoder=FakeEncoder()) as index:
    if action in ("add", "add-merge"):
        if action == "add-merge":  # the add's own segment, then a merge in the same write
            index.merge_policy = MergePolicy(segments_per_tier=2)
        texts = {f"a{i}": f"New text {i} on orchards and apples." for i in range(3, 8)}
        index.add([make_article(i, t) for i, t in texts.items()])
    elif action == "remove":
        index.remove(["a0", "a1"])
    elif action == "optimize":
        index.optimize()
    else:
        index.rebuild("hnsw")
"""
_WRITE = ["before-faiss-write", "mid-faiss-write", "before-commit", "after-commit",
          "after-manifest"]  # fmt: skip
_MERGE = [f"merge-{stage}" for stage in _WRITE]
# The stages each write goes through: only an add embeds; a removal writes no
# vector file (tombstones are rows); a merge has stages of its own.
STAGES = {
    "add": ["after-embed", *_WRITE],
    "remove": ["before-commit", "after-commit", "after-manifest"],
    "rebuild": _WRITE,
    "optimize": _MERGE,
    "add-merge": _MERGE,
}
COMMITTED = {"after-commit", "after-manifest", "merge-after-commit", "merge-after-manifest"}


def _killed_writer(folder: Path, action: str, stage: str) -> int:
    env = {**os.environ, "SEMSEARCH_FAILPOINT": stage, "PYTHONPATH": str(ROOT)}
    child = subprocess.run(
        [sys.executable, "-c", _WRITER, str(folder), action], cwd=ROOT, env=env, timeout=120
    )
    return child.returncode


CASES = [(action, stage) for action, stages in STAGES.items() for stage in stages]


@pytest.mark.parametrize(("action", "stage"), CASES)
def test_a_writer_killed_at_any_stage_leaves_the_old_or_the_new_index(
    tmp_path, fake_encoder, action, stage
):
    folder = tmp_path / "ix"
    with Index.create(folder, encoder=fake_encoder) as index:
        index.merge_policy = MergePolicy(in_writes=False)
        index.add(_articles(OLD))
        index.add([make_article("z0", "A second segment.")])
        index.remove(["z0"])  # and a tombstone in it
        assert index.info().segments == 2 and index.info().tombstones == 1
    assert _killed_writer(folder, action, stage) == -signal.SIGKILL
    report = verify(folder)
    assert report.ok, report.problems
    new = {
        "add": {**OLD, **NEW},
        "add-merge": {**OLD, **NEW},  # the add committed before the merge began
        "remove": {k: v for k, v in OLD.items() if k not in {"a0", "a1"}},
    }
    expected = new.get(action, OLD) if stage in COMMITTED or action == "add-merge" else OLD
    assert _content(folder, fake_encoder) == expected
    with Index.open(folder, encoder=fake_encoder) as index:  # the next write recovers
        index.add([make_article("z", "One more text.")])
        live = {s.id for s in index._vectors.segments}
    assert verify(folder).ok and not verify(folder).notes
    assert {int(p.name.split(".")[1]) for p in folder.glob("segment.*")} == live
    assert not list(folder.glob("vectors.*.faiss"))


_READER = """
import sys, time
from semsearch import Index
from tests.conftest import FakeEncoder
folder, done, out = sys.argv[1], sys.argv[2], sys.argv[3]
encoder, seen = FakeEncoder(), []

def result(label, index, mode):
    hits = index.search("version text", k=50, mode=mode)
    versions = {h.text.split()[1] for h in hits}
    seen.append(f"{label}-{mode} {len(hits)} {' '.join(sorted(versions))}")

index = Index.open(folder, encoder=encoder)  # one reader for the whole run
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    finished = __import__("os").path.exists(done)
    for mode in ("keyword", "semantic", "hybrid"):
        result("long", index, mode)
    if len(seen) == 3:
        open(out + ".ready", "w").close()  # the writer starts once every reader reads
    with Index.open(folder, encoder=encoder) as fresh:  # a process opening mid-write
        for mode in ("semantic", "hybrid"):
            result("fresh", fresh, mode)
    if finished:
        break
open(out, "w").write("\\n".join(seen))
"""


def test_readers_see_one_whole_generation_while_a_writer_updates(tmp_path, fake_encoder):
    folder, done = tmp_path / "ix", tmp_path / "done"

    def corpus(v: int) -> list:
        return [make_article(f"a{i}", f"Version v{v} text of article {i}.") for i in range(20)]

    with Index.create(folder, encoder=fake_encoder) as index:
        index.add(corpus(0))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outs = [tmp_path / f"reader{i}.txt" for i in range(3)]
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", _READER, str(folder), str(done), str(o)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
        )
        for o in outs
    ]
    deadline = time.monotonic() + 90
    while not all(Path(f"{o}.ready").exists() for o in outs):
        assert time.monotonic() < deadline, "the readers did not start"
        assert all(r.poll() is None for r in readers), "a reader died"
        time.sleep(0.05)
    with Index.open(folder, encoder=fake_encoder) as index:
        for v in range(1, 31):
            index.add(corpus(v))
            if v % 3 == 0:
                index.remove(["a19"])
                index.add(corpus(v))
    done.touch()
    seen: dict[str, set[str]] = {}
    for reader, out in zip(readers, outs, strict=True):
        assert reader.wait(timeout=90) == 0, reader.stderr.read().decode()[-2000:]
        lines = out.read_text().splitlines()
        assert lines
        for line in lines:
            label, count, *versions = line.split()
            # Never two generations in one result, nor a vector file behind SQLite.
            assert len(versions) == 1 and int(count) in (19, 20), line
            seen.setdefault(label, set()).update(versions)
    assert len(seen) == 5  # keyword, semantic, hybrid (long-lived); semantic, hybrid (fresh)
    assert all(len(versions) > 2 for versions in seen.values()), seen  # read while written
    assert "v30" in seen["long-semantic"]  # the long-lived reader followed every commit


def test_a_long_lived_index_searches_what_another_process_committed(tmp_path, fake_encoder):
    folder = tmp_path / "ix"
    with Index.create(folder, encoder=fake_encoder) as index:
        index.add(_articles(OLD))
    with Index.open(folder, encoder=fake_encoder) as reader:
        assert {h.article_id for h in reader.search("orchards apples", k=3)} <= set(OLD)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for action in ("add", "remove"):  # a3-a5 replaced, a6-a7 added; then a0-a1 removed
            run = [sys.executable, "-c", _WRITER, str(folder), action]
            assert subprocess.run(run, cwd=ROOT, env=env, timeout=120).returncode == 0
        for mode in ("semantic", "hybrid"):  # the same object, never reopened
            hits = reader.search("new orchards and apples", k=5, mode=mode)
            assert {h.article_id: h.text for h in hits} == {i: NEW[i] for i in NEW}, mode
            old = reader.search("old harbours and ferries", k=10, mode=mode, group=False)
            assert sorted(h.article_id for h in old) == ["a2", *NEW], mode
            assert {h.text for h in old} & set(OLD.values()) == {OLD["a2"]}, mode


def _used_middle(store: Path) -> int:
    """An offset in the middle of the database whose bytes SQLite reads: the start
    (header and cell pointers) of a leaf page of articles, not the unused space
    of some empty index's page, whose damage harms nothing and no check sees."""
    db = sqlite3.connect(store)
    try:
        pages = [
            r[0]
            for r in db.execute(
                "SELECT pageno FROM dbstat WHERE name = 'articles' AND pagetype = 'leaf'"
                " AND ncell > 0 ORDER BY pageno"
            )
        ]
        size = db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    return (pages[len(pages) // 2] - 1) * size


@pytest.mark.parametrize("how", ["truncate", "overwrite-start", "overwrite-middle"])
@pytest.mark.parametrize("name", ["manifest.json", "store.sqlite", "vectors"])
def test_a_damaged_file_gives_a_clear_error(tmp_path, fake_encoder, name, how):
    folder = tmp_path / "ix"
    with Index.create(folder, encoder=fake_encoder) as index:
        index.add(_articles(OLD) + [make_article(f"x{i}", "filler " * 200) for i in range(30)])
    file = next(folder.glob("segment.*.faiss")) if name == "vectors" else folder / name
    data = bytearray(file.read_bytes())
    if how == "truncate":
        data = data[: len(data) // 2]
    elif how == "overwrite-start":
        data[:64] = b"\xff" * 64
    else:
        middle = _used_middle(file) if name == "store.sqlite" else len(data) // 2
        data[middle : middle + 64] = b"\x00\xff" * 32
    file.write_bytes(bytes(data))
    try:
        with Index.open(folder, encoder=fake_encoder) as index:
            index.search("harbours", k=5)
            index.search("harbours", k=5, mode="keyword")
    except SemsearchError as e:
        # One line naming the damaged file itself (not just "the store").
        assert isinstance(e, IncompatibleIndexError), repr(e)
        assert f"{file} is damaged" in str(e) and "\n" not in str(e), e
    else:
        # Only bytes not read on these paths can go unnoticed, and verify finds them:
        # SQLite pages these searches skip, and a segment's vectors, which open
        # checks by size and header only (the full CRC-32 is verify's).
        assert name in ("store.sqlite", "vectors") and how == "overwrite-middle"
    assert not verify(folder).ok


@pytest.mark.parametrize("name", ["manifest.json", "store.sqlite", "vectors"])
def test_a_damaged_file_error_says_what_to_do(tmp_path, fake_encoder, name):
    folder = tmp_path / "ix"
    with Index.create(folder, encoder=fake_encoder) as index:
        index.add(_articles(OLD))
    file = next(folder.glob("segment.*.faiss")) if name == "vectors" else folder / name
    file.write_bytes(file.read_bytes()[:100])
    damaged = f"{re.escape(str(file))} is damaged"
    with (
        pytest.raises(IncompatibleIndexError, match=damaged) as e,
        Index.open(folder, encoder=fake_encoder) as index,
    ):
        index.search("harbours", k=5)
    assert f"`semsearch verify --index {folder}` lists every problem" in str(e.value)
    assert "restore the folder from a backup or build the index again" in str(e.value)


def test_a_newer_format_is_refused(fake_index):
    manifest = fake_index.path / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format_version": 4', '"format_version": 99'))
    with pytest.raises(IncompatibleIndexError, match="format 99, newer"):
        Index.open(fake_index.path)


def test_an_edited_article_embeds_only_its_changed_chunks(fake_index):
    paragraphs = [f"Paragraph {i} " + "word " * 90 + "end." for i in range(4)]
    first = fake_index.add([make_article("long", "\n\n".join(paragraphs))])
    assert first.chunks_embedded == first.chunks_added >= 4
    paragraphs[2] = "A rewritten paragraph " + "other " * 90 + "end."
    second = fake_index.add([make_article("long", "\n\n".join(paragraphs))])
    assert second.updated == 1 and second.chunks_added == first.chunks_added
    assert second.chunks_embedded == 1
    assert verify(fake_index.path).ok


def test_prune_with_rows_from_stdin(fake_index, monkeypatch):
    import io

    from semsearch import load_paths

    rows = '{"id": "r1", "text": "one"}\n{"id": "r2", "text": "two"}\n'
    monkeypatch.setattr("sys.stdin", io.StringIO(rows))
    fake_index.add(load_paths(["-"]))
    monkeypatch.setattr("sys.stdin", io.StringIO('{"id": "r2", "text": "two"}\n'))
    result = fake_index.add(load_paths(["-"]), prune=["-"])
    assert result.removed == 1 and fake_index.get("r1") is None and len(fake_index) == 1


def test_a_write_removes_an_old_half_made_export_folder(fake_index):
    leftover = fake_index.path / "onnx.tmp"  # what a crash under semsearch 0.1 left
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"partial")
    fake_index.add([make_article("a", "Alpha.")])
    assert not leftover.exists()
    assert fake_index.search("alpha", k=1)[0].article_id == "a"
