"""Candidate sources behind one interface: fit on interactions, recommend each user's top-n unseen items.

Every source (popularity over all time or a recent window, item neighbours, ALS, EASE, the sequence models) returns
lists as ``(user_idx, item_idx, score, rank)`` with ranks 1..n, no item the user interacted with in the fitted data,
ties to the smaller item_idx, and the popular list for a user it cannot score. Each lives in one module of this
package with its ``[candidates.<name>]`` settings, its feature prefix, its refit policy and the tables it leaves;
:mod:`reelrank.candidates.base` holds the interface and the registry every other part derives from (config names,
the ranker's features, evaluation, the catalog). The shape follows implicit's ``fit``/``recommend`` and RecTools'
``fit(dataset)``/``recommend(users, k)``. Importing the package imports no Spark (the kernels load when a source
runs).
"""

from __future__ import annotations

from importlib import import_module

from reelrank.candidates.base import (
    CandidateSource,
    Emitted,
    SourceSettings,
    config_problems,
    emitted,
    feature_sources,
    is_baseline,
    kept_from_history,
    list_length,
    make,
    names,
    register,
    servable_names,
    serves_from_history,
    source_class,
    unregister,
)

BUILT_IN = ("als", "item_neighbours", "popular", "ease", "sequence")
"""The modules of the built-in sources, imported (so registered) in this order: the order of the ranker's features
(als, item_neighbours, popular, ease, sasrec) and of names in messages. A new source is a module here and a table
``[candidates.<name>]`` in ``conf/base.toml``; one defined elsewhere calls :func:`register` itself."""

for _module in BUILT_IN:
    import_module(f"{__name__}.{_module}")

from reelrank.candidates.sequence import refit_plan  # noqa: E402  (registered above)

__all__ = [
    "BUILT_IN", "CandidateSource", "Emitted", "SourceSettings", "config_problems", "emitted", "feature_sources",
    "is_baseline", "kept_from_history", "list_length", "make", "names", "refit_plan", "register", "servable_names",
    "serves_from_history", "source_class", "unregister",
]
