"""semsearch: semantic search for articles.

Articles are loaded from files, split into chunks with the model's own
tokenizer, embedded with sentence-transformers, and kept in a FAISS index with
their metadata in SQLite, all in one folder.

Example:
    >>> from semsearch import Index, load_paths
    >>> index = Index.create("indexes/news")
    >>> index.add(load_paths(["examples/articles"]))
    >>> for hit in index.search("NATO Indo-Pacific", k=3):
    ...     print(hit.score, hit.title)
"""

__version__ = "0.1.0"

from .config import MergePolicy
from .errors import (
    BadInputError,
    IncompatibleIndexError,
    IndexExistsError,
    IndexNotFoundError,
    ModelError,
    QueryTruncatedWarning,
    SemsearchError,
)
from .index import Index
from .load import FieldMap, load_paths
from .records import AddResult, Article, Chunk, Hit, IndexInfo, OptimizeResult, Skipped

__all__ = [
    "AddResult",
    "Article",
    "BadInputError",
    "Chunk",
    "FieldMap",
    "Hit",
    "IncompatibleIndexError",
    "Index",
    "IndexExistsError",
    "IndexInfo",
    "IndexNotFoundError",
    "MergePolicy",
    "ModelError",
    "OptimizeResult",
    "QueryTruncatedWarning",
    "SemsearchError",
    "Skipped",
    "__version__",
    "load_paths",
]
