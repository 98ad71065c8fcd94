"""A distributed build on Ray Data: workers load, chunk and embed; the driver commits.

The pipeline, one Ray Data dataset streamed back to the driver in input order:

1. **Units of input**, listed by the driver: each file under the paths given
   (as :func:`semsearch.load.input_files` orders them), and each row group of
   a Parquet file.
2. **Load** (CPU tasks, ``flat_map``): :func:`semsearch.load.load_file` turns a
   unit into articles, or :class:`~semsearch.records.Skipped` records; the same
   code as a local build, so the same ids, fields and errors.
3. **Diff and chunk** (CPU tasks, ``map_batches``): an article whose id and
   :func:`~semsearch.writer.article_hash` are in the snapshot of the index
   the driver took under its writer lock is unchanged: it goes back as a
   stub, without its text, and is never embedded. Others are chunked with the
   index's own chunker (the tokenizer of its export).
4. **Embed** (an actor pool, ``map_batches`` with a class): each actor holds
   the model once: the index's ONNX export (shipped through Ray's object
   store, so workers need no shared disk) on CPUs, or the GPU fast path
   (:class:`semsearch.torch_backend.TorchEncoder`) on GPUs.
5. **Commit** (the driver): :meth:`semsearch.writer.Writer.add` takes the
   stream as :class:`~semsearch.writer.Prepared` articles, decides again
   which are unchanged, writes a window of chunks at a time as a segment and
   commits once; a failure anywhere, a killed driver included, leaves the
   index as it was.

Records travel between stages as Arrow tables: a JSON ``record`` column (ASCII,
so any text survives) and the vectors as float32 bytes. Ray's own retries
cover a worker that dies: a task is run again, an actor restarted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..commit import failpoint
from ..errors import BadInputError, MissingDependencyError
from ..load import FieldMap, input_files, load_file, parquet_row_groups
from ..records import Article, Chunk, Skipped
from . import RayOptions

_SNAPSHOT_PAGE = 50_000
_TASK_CPUS = 0.5
"""CPUs a load or chunk task reserves: light work beside the embedding actors."""


def import_ray() -> Any:
    """Ray, or an error that says how to install it.

    Raises:
        MissingDependencyError: if Ray (with Ray Data) is not installed.
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError(
            'a distributed build needs Ray Data: pip install "semsearch[ray]"'
        ) from None
    return ray


def prepared_articles(
    folder: Path,
    store_file: str,
    model: dict[str, Any],
    chunker: dict[str, Any],
    paths: Sequence[str | os.PathLike[str]],
    *,
    fields: FieldMap | None = None,
    date_order: str | None = None,
    clean: bool = True,
    options: RayOptions | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Iterator[Any]:
    """The articles under ``paths``, loaded, diffed, chunked and embedded on a Ray cluster.

    An iterator for :meth:`semsearch.writer.Writer.add`: the inputs are
    checked now, but nothing is read or sent until the write iterates it,
    which it does holding the writer lock, so the snapshot of stored articles
    taken then is the one the write diffs against.

    Args:
        folder: the index folder (its ONNX export is sent to the workers).
        store_file: the index's SQLite file name in ``folder``.
        model: the manifest's model record (``ModelInfo`` as a dict).
        chunker: the manifest's chunker settings (``ChunkerInfo`` as a dict).
        paths, fields, date_order, clean: as for :func:`semsearch.load_paths`.
        options: the cluster and its workers (default :class:`RayOptions`).
        batch_size: chunks per model call in an embedding actor.
        progress: show Ray Data's progress bars.

    Yields:
        :class:`~semsearch.writer.Prepared` articles and
        :class:`~semsearch.records.Skipped` inputs, in input order.

    Raises:
        MissingDependencyError: if Ray is not installed.
        BadInputError: if a path does not exist, or is ``-`` (standard input), or
            nothing answers at the cluster's address.
    """
    options = options or RayOptions()
    ray = import_ray()  # checked now, not when the write starts reading
    units = work_units(paths, fields, date_order, clean)
    if not ray.is_initialized():
        check_address(options.address)
    job = _Job(folder, store_file, model, chunker, units, options, batch_size)
    return _prepared(ray, job, progress)


@dataclass(frozen=True)
class _Job:
    folder: Path
    store_file: str
    model: dict[str, Any]
    chunker: dict[str, Any]
    units: list[dict[str, Any]]
    options: RayOptions
    batch_size: int


def _prepared(ray: Any, job: _Job, progress: bool) -> Iterator[Any]:
    if not job.units:
        return
    started_here = _connect(ray, job.options)
    try:
        with _data_context(ray, progress):
            yield from _stream(ray, job)
    finally:
        if started_here:
            ray.shutdown()


def work_units(
    paths: Sequence[str | os.PathLike[str]],
    fields: FieldMap | None,
    date_order: str | None,
    clean: bool,
) -> list[dict[str, Any]]:
    """What the load tasks read: one unit per file, one per row group of a Parquet file.

    Raises:
        BadInputError: if a path does not exist, or is ``-``.
    """
    for p in paths:
        if os.fspath(p) == "-":
            raise BadInputError("a distributed build reads files, not standard input (-)")
        if not Path(p).exists():
            raise BadInputError("no such file or directory", path=os.fspath(p))
    mapping = {k: v for k, v in vars(fields or FieldMap()).items()}
    common = {"fields": mapping, "date_order": date_order, "clean": clean}
    units: list[dict[str, Any]] = []
    for file, root in input_files(paths):
        unit = {"path": os.fspath(file), "root": os.fspath(root), **common}
        groups: list[tuple[int, int]] = []
        if file.suffix.lower() == ".parquet":
            with suppress(BadInputError, MissingDependencyError):  # the task reports it
                groups = parquet_row_groups(file)
        if len(groups) > 1:
            units.extend({**unit, "row_groups": [g]} for g, _rows in groups)
        else:
            units.append(unit)
    return units


# -- the driver ----------------------------------------------------------------------


def _connect(ray: Any, options: RayOptions) -> bool:
    """Join or start the cluster; True if this call started (and must stop) it."""
    if ray.is_initialized():
        return False
    settings: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": True,
    }
    address = options.address
    try:
        return _init(ray, address, options, settings)
    except ValueError as e:  # Ray's word for an address it cannot parse
        raise BadInputError(f"cannot connect to the Ray cluster at {address!r}: {e}") from None


def check_address(address: str) -> None:
    """Refuse, before anything is written, a cluster address nothing answers at.

    Raises:
        BadInputError: as :func:`_check_reachable`, for the address given or
            ``$RAY_ADDRESS`` (which ``auto`` uses).
    """
    if address not in ("auto", "local"):
        _check_reachable(address, "the Ray address")
    elif address == "auto" and os.environ.get("RAY_ADDRESS"):
        _check_reachable(os.environ["RAY_ADDRESS"], "$RAY_ADDRESS")


def _check_reachable(address: str, what: str, timeout: float = 5.0) -> None:
    """Refuse at once an address nothing answers at (``ray.init`` retries for ever).

    Raises:
        BadInputError: if the address has no ``host:port``, or no TCP connection
            to it opens within ``timeout`` seconds.
    """
    import socket

    where = address.split("://", 1)[-1].rstrip("/")
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise BadInputError(
            f"{what} {address!r} is not HOST:PORT or ray://HOST:PORT (use auto or local for "
            "a cluster on this machine; --ray comes after the paths)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise BadInputError(f"no Ray cluster answers at {address} ({what}): {e}") from None


def _init(ray: Any, address: str, options: RayOptions, settings: dict[str, Any]) -> bool:
    if address == "auto" and not os.environ.get("RAY_ADDRESS"):
        try:  # a cluster already running on this machine (ray start --head)
            ray.init(address="auto", **settings)
            return True
        except ConnectionError:
            address = "local"
    if address == "local":
        ray.init(address="local", num_cpus=options.local_cpus, **settings)
    else:
        ray.init(address=None if address == "auto" else address, **settings)
    return True


@contextmanager
def _data_context(ray: Any, progress: bool) -> Iterator[None]:
    """Ray Data's settings for this build: output in input order, bars only if asked;
    the caller's own settings are restored after it."""
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    # Input order is what a local build writes in: the same chunk ids.
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    quiet = logging.getLogger("ray.data")
    level = quiet.level
    if not progress:  # its notices, "progress bars disabled" among them
        quiet.setLevel(logging.ERROR)
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        quiet.setLevel(level)


def _stream(ray: Any, job: _Job) -> Iterator[Any]:
    from ..writer import Prepared

    folder, model, units, options = job.folder, job.model, job.units, job.options
    dim = int(model["dim"])
    workers = options.embed_workers or _default_workers(ray, options)
    _check_fit(ray, options, workers)
    snapshot = ray.put(_snapshot(folder / job.store_file))
    export = _export_files(folder)
    spec = {
        "model": model,
        "chunker": job.chunker,
        "export": ray.put(export[1]) if export else None,
        "export_key": export[0] if export else None,
        "snapshot": snapshot,
        # 1.5 CPUs: two threads, half a CPU left for load and chunk tasks.
        "threads": max(1, math.ceil(options.cpus_per_worker)),
        "gpu": options.gpus_per_worker > 0,
        "batch_size": job.batch_size,
    }
    dataset = (
        ray.data.from_items(units, override_num_blocks=len(units))
        .flat_map(_load_unit, num_cpus=_TASK_CPUS)
        .map_batches(
            _chunk_batch,
            fn_kwargs={"spec": spec},
            batch_size=options.chunk_batch,
            batch_format="pyarrow",
            num_cpus=_TASK_CPUS,
        )
        .map_batches(
            _Embedder,
            fn_constructor_kwargs={"spec": spec},
            batch_size=options.articles_per_batch,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=options.cpus_per_worker,
            num_gpus=options.gpus_per_worker or None,
        )
    )
    for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        records = table.column("record").to_pylist()
        vectors = table.column("vectors").to_pylist()
        for record, blob in zip(records, vectors, strict=True):
            item = json.loads(record)
            if item["kind"] == "skipped":
                yield Skipped(item["path"], item["reason"], item["line"])
                continue
            article = _article(item["article"])
            spans = item.get("chunks")
            chunks = None
            if spans is not None:
                chunks = [
                    Chunk(article.id, ordinal, start, end, article.text[start:end], tokens)
                    for ordinal, start, end, tokens in spans
                ]
            array = np.frombuffer(blob, dtype=np.float32).reshape(-1, dim)
            yield Prepared(article, item["digest"], chunks, item.get("texts", []), array)


def _default_workers(ray: Any, options: RayOptions) -> int:
    resources = ray.cluster_resources()
    if options.gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) / options.gpus_per_worker))
    spare = resources.get("CPU", 1) - 1  # one CPU loads and chunks
    return max(1, int(spare / options.cpus_per_worker))


def _check_fit(ray: Any, options: RayOptions, workers: int) -> None:
    """Refuse actors the cluster cannot hold (more GPUs than it has), or that would take
    every CPU, so that the load and chunk tasks feeding them would never be
    scheduled: either way the build would wait for ever. (An autoscaling cluster
    is judged by the nodes it has when the build starts.)

    Raises:
        BadInputError: naming the cluster's CPUs or GPUs and what the actors ask for.
    """
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    if workers * options.gpus_per_worker > gpus:
        raise BadInputError(
            f"{workers} embedding worker(s) of {options.gpus_per_worker:g} GPU(s) need more "
            f"GPUs than this Ray cluster has ({gpus:g} GPU)"
        )
    cpus = float(resources.get("CPU", 0))
    wanted = workers * options.cpus_per_worker
    if wanted + _TASK_CPUS > cpus:
        raise BadInputError(
            f"{workers} embedding worker(s) of {options.cpus_per_worker:g} CPU(s) leave no "
            f"CPU for loading and chunking on this Ray cluster of {cpus:g} CPUs; ask for "
            "fewer workers or CPUs per worker"
        )


def _snapshot(store_path: Path) -> dict[str, np.ndarray]:
    """Each stored article as two uint64s: its id's hash and its article hash's first
    8 bytes, sorted by the first (16 bytes an article: 160 MB for ten million)."""
    from ..store import Store
    from ..writer import id_hashes

    keys, values = [], []
    store = Store(store_path)
    try:
        for page in store.article_hash_pages(_SNAPSHOT_PAGE):
            keys.append(id_hashes([article_id for article_id, _ in page]))
            values.append(np.array([int(d[:16], 16) for _, d in page], dtype=np.uint64))
    finally:
        store.close()
    key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
    value = np.concatenate(values) if values else np.zeros(0, dtype=np.uint64)
    order = np.argsort(key, kind="stable")
    return {"ids": key[order], "digests": value[order]}


def _export_files(folder: Path) -> tuple[str, dict[str, bytes]] | None:
    """The index's ONNX export as {relative name: bytes}, with a key naming its content;
    None if it has none."""
    from ..embed import ONNX_FOLDER

    root = folder / ONNX_FOLDER
    if not root.is_dir():
        return None
    files = _read_files(root)
    return _export_key(files), files


def _read_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".complete"
    }


def _export_key(files: dict[str, bytes]) -> str:
    """A name for an export's content: SHA-256 over its files' names and contents."""
    digest = hashlib.sha256()
    for name, data in sorted(files.items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()[:32]


def _article(data: dict[str, Any]) -> Article:
    return Article(
        **{
            **data,
            "tags": tuple(data.get("tags") or ()),
            "removed_lines": tuple(data.get("removed_lines") or ()),
        }
    )


# -- the workers ---------------------------------------------------------------------


def _load_unit(unit: dict[str, Any]) -> list[dict[str, str]]:
    """One unit of input → its articles and skipped inputs, each a JSON ``record``."""
    path = Path(unit["path"])
    items = load_file(
        path,
        root=Path(unit["root"]),
        fields=FieldMap(**unit["fields"]),
        date_order=unit["date_order"],
        clean=unit["clean"],
        row_groups=unit.get("row_groups"),
    )
    rows = []
    for item in items:
        record: dict[str, Any]
        if isinstance(item, Skipped):
            record = {"kind": "skipped", "path": item.path, "reason": item.reason}
            record["line"] = item.line
        else:
            record = {"kind": "article", "article": item.to_dict()}
        rows.append({"record": json.dumps(record, ensure_ascii=True)})
    return rows


def _chunk_batch(table: Any, spec: dict[str, Any]) -> Any:
    """Diff a batch of articles against the snapshot and chunk the changed ones."""
    import pyarrow as pa

    from ..writer import article_hash, id_hashes

    snapshot = _cached_get(spec["snapshot"])
    out = []
    records = [json.loads(r) for r in table.column("record").to_pylist()]
    articles = [(n, _article(r["article"])) for n, r in enumerate(records) if "article" in r]
    hashes = id_hashes([a.id for _, a in articles])
    at = np.searchsorted(snapshot["ids"], hashes)
    at = np.minimum(at, max(len(snapshot["ids"]) - 1, 0))
    for (n, article), key, i in zip(articles, hashes, at, strict=True):
        record = records[n]
        digest = article_hash(article)
        record["digest"] = digest
        stored = len(snapshot["ids"]) and snapshot["ids"][i] == key
        if stored and snapshot["digests"][i] == np.uint64(int(digest[:16], 16)):
            # Unchanged: the driver needs only its id, where it was read, and its digest.
            record["article"] = {
                "id": article.id,
                "text": "",
                "path": article.path,
                "removed_lines": list(article.removed_lines),
            }
            continue
        chunker = _chunker(spec)
        chunks = chunker.chunks(article)
        record["chunks"] = [[c.ordinal, c.start, c.end, c.n_tokens] for c in chunks]
        record["texts"] = [chunker.embed_text(article, c) for c in chunks]
    for record in records:
        out.append(json.dumps(record, ensure_ascii=True))
    return pa.table({"record": pa.array(out, type=pa.string())})


class _Embedder:
    """An embedding actor: loads the model once, embeds each batch's chunk texts."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.encoder = _encoder(spec)
        self.dim = int(spec["model"]["dim"])

    def __call__(self, table: Any) -> Any:
        import pyarrow as pa

        records = table.column("record").to_pylist()
        texts_of = [json.loads(r).get("texts", []) for r in records]
        texts = [t for texts in texts_of for t in texts]
        if texts:
            vectors = self.encoder.encode_documents(texts, batch_size=self.spec["batch_size"])
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        else:
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        failpoint("ray-embed")  # the tests kill an actor here, mid-build
        blobs, at = [], 0
        for row in texts_of:
            blobs.append(vectors[at : at + len(row)].tobytes())
            at += len(row)
        return pa.table(
            {"record": table.column("record"), "vectors": pa.array(blobs, type=pa.binary())}
        )


def _cached_get(ref: Any) -> Any:
    """``ray.get`` once per worker process for each object (the snapshot, the export)."""
    key = ref.hex()
    if key not in _GOT:
        import ray

        _GOT[key] = ray.get(ref)
    return _GOT[key]


_GOT: dict[str, Any] = {}


def _export_folder(spec: dict[str, Any]) -> Path | None:
    """The index's export, written once per machine and user into a private folder
    (mode 0700) of the temporary folder; a copy found there is used only if its
    files hash to the key it is named by."""
    if spec["export"] is None:
        return None
    private = Path(tempfile.gettempdir()) / f"semsearch-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    if private.stat().st_uid != os.getuid() or private.stat().st_mode & 0o077:
        raise PermissionError(f"{private} is not this user's private folder")
    folder = private / f"export-{spec['export_key']}"
    if _intact(folder, spec["export_key"]):
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # a damaged or altered copy
    files = _cached_get(spec["export"])
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=private))
    for name, data in files.items():
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (staging / ".complete").write_text("")
    try:
        os.rename(staging, folder)
    except OSError:  # another worker on this machine was first
        if _intact(folder, spec["export_key"]):
            shutil.rmtree(staging, ignore_errors=True)
            return folder
        return staging  # this process's own copy, then
    return folder


def _intact(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds a whole export whose files hash to ``key``."""
    return (folder / ".complete").exists() and _export_key(_read_files(folder)) == key


def _chunker(spec: dict[str, Any]) -> Any:
    """The index's chunker, made once per worker process."""
    key = spec["export_key"] or spec["model"]["name"]
    if key not in _CHUNKERS:
        from ..reader import make_chunker

        settings = spec["chunker"]
        encoder = _tokenizing_encoder(spec)
        _CHUNKERS[key] = make_chunker(
            encoder, settings["overlap_tokens"], settings.get("chunk_tokens")
        )
    return _CHUNKERS[key]


_CHUNKERS: dict[str, Any] = {}


def _tokenizing_encoder(spec: dict[str, Any]) -> Any:
    """What chunks: the export's tokenizer (one thread), else the model's own."""
    folder = _export_folder(spec)
    if folder is not None:
        from ..onnx_backend import OnnxEncoder

        return OnnxEncoder(folder, threads=1)
    return _model_encoder(spec)


def _model_encoder(spec: dict[str, Any]) -> Any:
    from ..embed import load_encoder

    model = spec["model"]
    return load_encoder(model["name"], model["query_prompt"], model["document_prompt"])


def _encoder(spec: dict[str, Any]) -> Any:
    """What embeds in an actor: the GPU fast path on a GPU, else the export (as the
    index's build backend, int8 included), else sentence-transformers."""
    model = spec["model"]
    if spec["gpu"]:
        from ..torch_backend import TorchEncoder

        return TorchEncoder(
            model["name"],
            device="cuda",
            query_prompt=model["query_prompt"],
            document_prompt=model["document_prompt"],
        )
    folder = _export_folder(spec)
    if folder is not None and model["backend"] in ("onnx", "onnx-int8"):
        from ..onnx_backend import OnnxEncoder

        return OnnxEncoder(folder, threads=spec["threads"])
    return _model_encoder(spec)
