"""The public surface: what `import semsearch` offers, and only that."""

from __future__ import annotations

import subprocess
import sys

import semsearch

EXPECTED = {
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
}


def test_all_lists_exactly_the_public_names():
    assert set(semsearch.__all__) == EXPECTED
    public = {n for n in dir(semsearch) if not n.startswith("_") and n not in _submodules()}
    assert public <= EXPECTED


def _submodules():
    return {n for n in dir(semsearch) if type(getattr(semsearch, n)).__name__ == "module"}


def test_every_error_derives_from_the_root():
    for name in EXPECTED:
        obj = getattr(semsearch, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, semsearch.SemsearchError), name


def test_public_callables_have_docstrings():
    for name in ("Index", "load_paths", "FieldMap"):
        assert getattr(semsearch, name).__doc__
    for method in ("create", "open", "add", "add_paths", "remove", "search", "search_batch"):
        assert getattr(semsearch.Index, method).__doc__, method


def test_python_dash_m_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "semsearch", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "Semantic search for articles" in out.stdout
