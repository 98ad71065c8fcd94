"""Builds spread over a cluster: an optional extra (``pip install "semsearch[ray]"``).

:func:`semsearch.Index.add_paths` with ``engine="ray"`` hands loading,
chunking and embedding to `Ray Data <https://docs.ray.io/en/latest/data/>`_
(:mod:`semsearch.distributed.ray_build`); the driver, the process that called
it, holds the writer lock and turns what the workers send back into
segments, committed as one ordinary generation. The result is an ordinary
index folder, the same as a local build's.

Why Ray Data rather than our own process pool: it schedules CPU tasks and
GPU actor pools across machines, streams batches between them with
back-pressure, and retries a task or restarts an actor whose worker died;
none of that is what semsearch exists for. This module imports nothing of
Ray: :class:`RayOptions` is plain data, and Ray is imported only when a
distributed build starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadInputError

ENGINES = ("local", "ray")
"""What may run an add's loading, chunking and embedding (``add_paths(engine=)``)."""


@dataclass(frozen=True)
class RayOptions:
    """How a distributed build uses its Ray cluster.

    Attributes:
        address: the cluster. ``"auto"``: ``$RAY_ADDRESS`` if set, else a
            cluster already running on this machine (``ray start --head``), else
            a new local one for this build (stopped after it). ``"local"``: always
            a new local one. Anything else is passed to ``ray.init(address=)``
            (``"ray://head:10001"``, ``"10.0.0.5:6379"``). Inside a process that
            called ``ray.init`` already, that cluster is used.
        embed_workers: actors that embed, each holding the model once. None:
            one per GPU where ``gpus_per_worker`` > 0, else the cluster's CPUs
            less one (left for loading and chunking), at least one.
        cpus_per_worker: CPUs each embedding actor reserves; ONNX Runtime
            runs that many threads in it, rounded up (1.5 on a 2-CPU machine: two
            threads, half a CPU left for the load and chunk tasks). The actors
            must leave half a CPU of the cluster free for those tasks.
        gpus_per_worker: GPUs each embedding actor reserves (0: embed on CPUs
            with the index's build backend; > 0: the GPU fast path,
            :class:`semsearch.torch_backend.TorchEncoder`).
        articles_per_batch: articles in each batch sent to an embedding actor.
        chunk_batch: articles in each batch a chunking task takes.
        local_cpus: CPUs of a new local cluster (None: every core).
    """

    address: str = "auto"
    embed_workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    articles_per_batch: int = 64
    chunk_batch: int = 256
    local_cpus: int | None = None

    def __post_init__(self) -> None:
        """Raises: BadInputError: for a count below 1 or a negative share of a CPU or GPU."""
        if self.embed_workers is not None and self.embed_workers < 1:
            raise BadInputError(f"embed_workers must be at least 1, not {self.embed_workers}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise BadInputError("cpus_per_worker must be > 0 and gpus_per_worker >= 0")
        if self.articles_per_batch < 1 or self.chunk_batch < 1:
            raise BadInputError("articles_per_batch and chunk_batch must be at least 1")


__all__ = ["ENGINES", "RayOptions"]
