"""Distributed builds on a real local Ray cluster of 2 CPUs, with the real model.

One cluster serves the module (starting one costs seconds). Its workers get
two environment variables: a fail point in the embedding actor, armed only
when a test creates the file ``SEMSEARCH_FAILPOINT_ONCE`` names, so that one
actor process is killed once, mid-build.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from semsearch import Index
from semsearch.commit import FAILPOINT_ENV, FAILPOINT_ONCE_ENV
from semsearch.distributed import RayOptions
from semsearch.errors import BadInputError, MissingDependencyError

ray = pytest.importorskip("ray", reason="needs Ray: pip install 'semsearch[ray]'")

pytestmark = pytest.mark.model
SAMPLE = Path(__file__).parent.parent / "examples" / "articles"
SCIFACT = Path(__file__).parent.parent.parent / "shared" / "data" / "scifact"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local 2-CPU cluster; yields the path that arms the embedding actor's fail point."""
    marker = tmp_path_factory.mktemp("ray") / "kill-once"
    env = {FAILPOINT_ENV: "ray-embed", FAILPOINT_ONCE_ENV: str(marker)}
    env["SEMSEARCH_CACHE"] = os.environ["SEMSEARCH_CACHE"]
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": env},
        logging_level="WARNING",
    )
    yield marker
    ray.shutdown()


def _build(folder: Path, paths: list[Path], engine: str, **kwargs: object) -> dict[str, int]:
    with Index.open_or_create(folder) as index:
        result = index.add_paths(paths, engine=engine, **kwargs)  # type: ignore[arg-type]
    return result.to_dict()


def _rows(folder: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every article and chunk row (ids, text, offsets, hashes) but write times."""
    db = sqlite3.connect(folder / "store.sqlite")
    try:
        articles = db.execute(
            "SELECT id, title, url, date, source, text, content_hash, path FROM articles "
            "ORDER BY pk"
        ).fetchall()
        chunks = db.execute(
            'SELECT id, article_pk, ordinal, start, "end", n_tokens, text_hash, keyword_text '
            "FROM chunks ORDER BY id"
        ).fetchall()
    finally:
        db.close()
    return articles, chunks


def _same_index(local: Path, distributed: Path, queries: list[str]) -> None:
    assert _rows(local) == _rows(distributed)
    with Index.open(local) as a, Index.open(distributed) as b:
        assert len(a) == len(b)
        for mode in ("semantic", "hybrid", "keyword"):
            for query in queries:
                hits_a = [(h.article_id, h.chunk_id) for h in a.search(query, k=10, mode=mode)]
                hits_b = [(h.article_id, h.chunk_id) for h in b.search(query, k=10, mode=mode)]
                assert hits_a == hits_b, (mode, query)
    vectors_a, vectors_b = _vectors(local), _vectors(distributed)
    assert vectors_a.shape == vectors_b.shape
    cosines = np.sum(vectors_a * vectors_b, axis=1)
    assert cosines.min() >= 0.9999, cosines.min()


def _vectors(folder: Path) -> np.ndarray:
    """Every live chunk's stored vector, in chunk id order: ``(n, dim)`` float32."""
    with Index.open(folder) as index:
        return index.chunk_vectors()[1]


def test_sample_articles_build_as_locally(tmp_path: Path, cluster: Path) -> None:
    local = _build(tmp_path / "local", [SAMPLE], "local")
    distributed = _build(tmp_path / "ray", [SAMPLE], "ray")
    assert distributed["added"] == local["added"] == 40
    assert distributed["chunks_added"] == local["chunks_added"]
    assert "workers" in distributed["timings"]  # the workers' load, chunk and embed
    _same_index(tmp_path / "local", tmp_path / "ray", ["NATO Indo-Pacific", "interest rates"])


@pytest.fixture(scope="module")
def scifact_subset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The first 300 SciFact abstracts as two JSONL files, and 20 of its claims."""
    if not (SCIFACT / "corpus.jsonl").exists():
        pytest.skip(f"no SciFact at {SCIFACT}")
    folder = tmp_path_factory.mktemp("scifact") / "corpus"
    folder.mkdir()
    lines = (SCIFACT / "corpus.jsonl").read_text().splitlines()[:300]
    rows = [json.loads(line) for line in lines]
    for part in range(2):
        with open(folder / f"part-{part}.jsonl", "w") as f:
            for row in rows[part::2]:
                record = {"id": row["_id"], "title": row["title"], "text": row["text"]}
                f.write(json.dumps(record) + "\n")
    claims = [json.loads(line)["text"] for line in (SCIFACT / "queries.jsonl").open()][:20]
    return folder, claims


def test_scifact_subset_builds_as_locally(
    tmp_path: Path, cluster: Path, scifact_subset: tuple[Path, list[str]]
) -> None:
    corpus, claims = scifact_subset
    local = _build(tmp_path / "local", [corpus], "local")
    distributed = _build(tmp_path / "ray", [corpus], "ray", ray=RayOptions(articles_per_batch=16))
    assert distributed["added"] == local["added"] == 300
    _same_index(tmp_path / "local", tmp_path / "ray", claims)


def test_a_killed_embedding_actor_is_restarted_and_the_index_is_the_same(
    tmp_path: Path, cluster: Path
) -> None:
    cluster.write_text("armed")
    result = _build(tmp_path / "ray", [SAMPLE], "ray", ray=RayOptions(articles_per_batch=8))
    assert not cluster.exists(), "no actor was killed"
    assert result["added"] == 40
    _build(tmp_path / "local", [SAMPLE], "local")
    _same_index(tmp_path / "local", tmp_path / "ray", ["NATO Indo-Pacific"])


def test_unchanged_articles_are_not_embedded_and_prune_removes_the_gone(
    tmp_path: Path, cluster: Path
) -> None:
    corpus = tmp_path / "articles"
    shutil.copytree(SAMPLE, corpus)
    _build(tmp_path / "ray", [corpus], "ray")
    _build(tmp_path / "local", [corpus], "local")
    changed = corpus / "world" / "nato-ap4-itpp.md"
    changed.write_text(changed.read_text() + "\nA new closing paragraph about the talks.\n")
    (corpus / "sport" / "marathon-course-record.md").unlink()
    result = _build(tmp_path / "ray", [corpus], "ray", prune=True)
    assert (result["added"], result["updated"], result["unchanged"]) == (0, 1, 38)
    assert result["removed"] == 1
    assert result["chunks_embedded"] == result["chunks_added"] > 0
    # The same change made locally gives the same index.
    _build(tmp_path / "local", [corpus], "local", prune=True)
    _same_index(tmp_path / "local", tmp_path / "ray", ["closing paragraph about the talks"])


def test_a_killed_distributed_build_leaves_the_index_as_it_was(
    tmp_path: Path, cluster: Path
) -> None:
    folder = tmp_path / "index"
    _build(folder, [SAMPLE], "local")
    before = _rows(folder)
    extra = tmp_path / "more"
    extra.mkdir()
    (extra / "new.md").write_text("# A new article\n\nAbout the talks on Arctic research.\n")
    env = {**os.environ, FAILPOINT_ENV: "before-commit"}
    command = [sys.executable, "-m", "semsearch", "index", str(extra), "--index", str(folder)]
    done = subprocess.run([*command, "--ray", "local"], env=env, capture_output=True, timeout=300)
    assert done.returncode == -9, done.stderr.decode()[-2000:]  # killed at the fail point
    assert _rows(folder) == before
    with Index.open(folder) as index:
        assert index.search("NATO Indo-Pacific")[0].article_id == "world/nato-ap4-itpp.md"
        assert index.get("new.md") is None


def test_parquet_row_groups_load_in_order_and_build_as_locally(
    tmp_path: Path, cluster: Path
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rows = [
        {"id": f"a{i}", "title": f"Report {i}", "text": f"Finding number {i} on coffee prices."}
        for i in range(30)
    ]
    rows[7]["text"] = ""  # a row without text: skipped, named by its row
    corpus = tmp_path / "dump"
    corpus.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), corpus / "dump.parquet", row_group_size=8)
    local = _build(tmp_path / "local", [corpus], "local")
    distributed = _build(tmp_path / "ray", [corpus], "ray")
    assert local["added"] == distributed["added"] == 29
    assert local["skipped"] == distributed["skipped"]
    assert local["skipped"][0]["line"] == 8
    _same_index(tmp_path / "local", tmp_path / "ray", ["coffee prices"])


def test_standard_input_and_missing_paths_are_refused_before_anything(tmp_path: Path) -> None:
    with Index.create(tmp_path / "index") as index:
        with pytest.raises(BadInputError, match="standard input"):
            index.add_paths(["-"], engine="ray")
        with pytest.raises(BadInputError, match="no such file"):
            index.add_paths([tmp_path / "missing"], engine="ray")
        with pytest.raises(BadInputError, match="unknown engine"):
            index.add_paths([SAMPLE], engine="spark")


def test_without_ray_the_error_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with (
        Index.create(tmp_path / "index") as index,
        pytest.raises(MissingDependencyError, match=r"semsearch\[ray\]"),
    ):
        index.add_paths([SAMPLE], engine="ray")


def test_cli_worker_options_need_ray(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from semsearch.cli import cli

    result = CliRunner().invoke(
        cli, ["index", str(SAMPLE), "--index", str(tmp_path / "i"), "--embed-workers", "2"]
    )
    assert result.exit_code == 2
    assert "--embed-workers, --cpus-per-worker and --gpus-per-worker go with --ray" in (
        result.output
    )
    assert not (tmp_path / "i").exists()


def test_workers_that_would_starve_loading_are_refused(tmp_path: Path, cluster: Path) -> None:
    with Index.create(tmp_path / "index") as index:
        options = RayOptions(embed_workers=2, cpus_per_worker=1)
        with pytest.raises(BadInputError, match="no CPU for loading and chunking"):
            index.add_paths([SAMPLE], engine="ray", ray=options)
        assert len(index) == 0


def test_cli_ray_takes_an_optional_address_and_reports_errors_in_one_line(
    tmp_path: Path, cluster: Path
) -> None:
    from click.testing import CliRunner

    from semsearch.cli import cli

    folder = tmp_path / "i"
    args = ["index", str(SAMPLE), "--index", str(folder), "--ray", "--embed-workers", "5"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert "5 embedding worker(s) of 1 CPU(s) leave no CPU" in result.output
    assert "Traceback" not in result.output
    assert not folder.exists()  # the index this command created is removed again


def test_gpu_workers_on_a_cluster_without_gpus_are_refused(tmp_path: Path, cluster: Path) -> None:
    with Index.create(tmp_path / "index") as index:
        options = RayOptions(embed_workers=1, gpus_per_worker=1)
        with pytest.raises(BadInputError, match="0 GPU"):
            index.add_paths([SAMPLE], engine="ray", ray=options)


def test_an_address_nothing_answers_at_is_refused_at_once(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from semsearch.cli import cli
    from semsearch.distributed.ray_build import check_address

    with pytest.raises(BadInputError, match=r"no Ray cluster answers at 127\.0\.0\.1:1"):
        check_address("127.0.0.1:1")
    with pytest.raises(BadInputError, match="is not HOST:PORT"):
        check_address("head-node")
    folder = tmp_path / "i"
    result = CliRunner().invoke(cli, ["index", str(SAMPLE), "--index", str(folder), "--ray", "1"])
    assert result.exit_code == 1 and "is not HOST:PORT" in result.output
    assert not folder.exists()


def test_ray_before_the_paths_is_a_usage_error(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from semsearch.cli import cli

    result = CliRunner().invoke(
        cli, ["index", "--index", str(tmp_path / "i"), "--ray", str(SAMPLE), "x"]
    )
    assert result.exit_code == 2
    assert "write --ray after the paths" in result.output


def test_bad_ray_options_are_bad_input() -> None:
    with pytest.raises(BadInputError, match="embed_workers must be at least 1"):
        RayOptions(embed_workers=0)


def test_a_tampered_export_copy_is_written_again(tmp_path: Path, cluster: Path) -> None:
    from semsearch.distributed import ray_build

    files = {"model.onnx": b"weights", "sub/tokenizer.json": b"{}"}
    spec = {"export": ray.put(files), "export_key": ray_build._export_key(files)}
    folder = ray_build._export_folder(spec)
    assert folder is not None and (folder / "sub" / "tokenizer.json").read_bytes() == b"{}"
    assert folder.parent.stat().st_mode & 0o077 == 0  # private to this user
    (folder / "model.onnx").write_bytes(b"planted")
    folder = ray_build._export_folder(spec)
    assert folder is not None and (folder / "model.onnx").read_bytes() == b"weights"
