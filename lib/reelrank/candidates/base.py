"""The candidate-source interface and the registry: the one list of sources that config, features, evaluation and the
catalog derive from.

A source class carries everything that is particular to it: its ``[candidates.<name>]`` table (a
:class:`SourceSettings` subclass), its feature prefix, whether it is a baseline, its refit / serve-from-history
policy and the warehouse tables it leaves. Config loading reads the registry to know the tables and names, and
``reelrank --help`` must not load Spark, so the settings class stays in the source's own module and every source
module imports no Spark, pandas or torch at import time: kernels and pyspark are imported inside the methods that
run them, ``DataFrame`` only for type checking (one home per source, rather than a settings module beside each).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

from pydantic.dataclasses import dataclass as section

from reelrank import columns as C
from reelrank.settings import SECTION, PositiveInt

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from reelrank.config import Config

log = logging.getLogger(__name__)


@section(frozen=True, config=SECTION)
class SourceSettings:
    """A source's ``[candidates.<name>]`` table; a source with more settings declares a subclass beside it."""

    n: PositiveInt
    """How many candidates the source proposes per user."""


@dataclass(frozen=True)
class Emitted:
    """A warehouse table a fitted source leaves (:meth:`CandidateSource.tables`): published from the fit on all
    interactions with the original ids of ``entity`` joined in, and, when ``kept_from_history`` names a work frame,
    the history fit's copy kept under that name for later stages."""

    name: str
    doc: str
    entity: Literal["user", "item"]
    """The index (``user_index`` or ``item_index``) whose ids the candidates stage joins in."""
    shape: Literal["neighbours", "vectors"]
    """``neighbours``: (entity_idx, neighbour_idx, ...) lists, both sides get ids; ``vectors``: one row per
    ``<entity>_idx`` (factors), which also gets the run id as its model version."""
    kept_from_history: str | None = None
    kept_doc: str = ""


S = TypeVar("S", bound=SourceSettings)


class CandidateSource(ABC):
    """A source of top-n lists: ``fit`` once, then ``recommend`` for any users (seen items are those fitted).

    :meth:`recommend` splits the users once: those the source can score (:meth:`warm_users`) get its own lists
    (:meth:`recommend_warm`), the rest the most popular unseen items of what it was fitted or served on (as RecTools'
    ``ModelBase.recommend`` calls ``_recommend_u2i``).
    """

    name: ClassVar[str]
    """The source's name in ``[candidates] sources`` and its table ``[candidates.<name>]``."""
    settings_type: ClassVar[type[SourceSettings]] = SourceSettings
    feature_prefix: ClassVar[str | None] = None
    """The ranker's features describe this source's list as ``f_<prefix>_score`` (z-score in the user's list) and
    ``f_<prefix>_rank``; None: the list is evaluated but feeds no feature (and no ranker candidate)."""
    membership_only: ClassVar[bool] = False
    """Its feature is only ``f_in_<name>`` (proposed or not): its scores are the same for every user."""
    baseline: ClassVar[bool] = True
    """A strong simple baseline (popularity, item-kNN, ALS, EASE) that a deep model must beat in the same run."""
    refit_budgeted: ClassVar[bool] = False
    """Its fit on all interactions is skipped (its history fit serves) when the night has more interactions than
    ``[candidates] refit_max_interactions``."""
    servable: ClassVar[bool] = False
    """:meth:`served_on` can serve later interactions from this fit (``[candidates] serve_from_history``)."""
    servable_when: ClassVar[tuple[Callable[[Config], bool], str] | None] = None
    """A condition on the rest of the config for serving from the history fit, and what it requires (in words)."""
    emits: ClassVar[tuple[Emitted, ...]] = ()
    """The warehouse tables :meth:`tables` returns."""

    work_dir: str | None = None
    """Where a source that writes files (shards, weights, checkpoints) writes them; None: a temporary folder."""
    _seen: DataFrame
    """``(user_idx, item_idx)`` of what the source was fitted or served on: never recommended again."""
    _popular: DataFrame
    """``(item_idx, score)``: distinct users per item of the same data, the list of users it cannot score."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings

    @classmethod
    def from_config(cls, cfg: Config) -> CandidateSource:
        """The unfitted source configured from its ``[candidates.<name>]`` table (and the kernel sections it uses)."""
        return cls(cfg.candidates[cls.name])

    @classmethod
    def settings_in(cls: type[CandidateSource], cfg: Config, kind: type[S]) -> S:
        """This source's settings in ``cfg``, as its own settings class."""
        settings = cfg.candidates[cls.name]
        assert isinstance(settings, kind), f"[candidates.{cls.name}] holds {type(settings).__name__}, not {kind}"
        return settings

    @abstractmethod
    def fit(self, interactions: DataFrame) -> CandidateSource:
        """Fit on ``(user_idx, item_idx, rating, ts)``; return self. Sets what :meth:`use` sets."""

    def use(self, interactions: DataFrame) -> None:
        """Remember ``interactions`` as what is seen and what the popular list of users it cannot score counts."""
        from reelrank.popularity import item_users

        self._seen = interactions.select(C.USER_IDX, C.ITEM_IDX)
        self._popular = item_users(interactions).cache()

    def start_from(self, fitted: CandidateSource) -> None:
        """Before ``fit``: reuse what ``fitted`` (the same source fitted on earlier data) learnt, where that saves
        work (the nightly's fit on all interactions after the history fit). Most sources start afresh."""
        return None

    def served_on(self, interactions: DataFrame) -> CandidateSource | None:
        """This fitted source recommending from ``interactions`` (what it fitted and later ones) without fitting
        again, or None where its lists can only come from a fit (``[candidates] serve_from_history``)."""
        return None

    def warm_users(self) -> DataFrame | None:
        """``(user_idx)`` of the users :meth:`recommend_warm` scores; the others get the popular list. Default: every
        user with an interaction in what the source was fitted or served on. None: no user (popularity itself)."""
        return self._seen.select(C.USER_IDX)

    def recommend_warm(self, users: DataFrame, n: int) -> DataFrame:
        """Top ``n`` unseen items of each ``user_idx`` in ``users`` (all of them warm, distinct, as int)."""
        raise NotImplementedError(f"{self.name} has no warm users")

    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        """Top ``n`` unseen items for every ``user_idx`` in ``users`` as ``(user_idx, item_idx, score, rank)``."""
        from pyspark.sql import functions as F

        from reelrank.popularity import popular_unseen

        wanted = users.select(F.col(C.USER_IDX).cast("int").alias(C.USER_IDX)).distinct()
        warm_ids = self.warm_users()
        if warm_ids is None:
            return popular_unseen(self._popular, wanted, self._seen, n)
        warm = wanted.join(warm_ids, C.USER_IDX, "left_semi")
        cold = wanted.join(warm_ids, C.USER_IDX, "left_anti")
        return self.recommend_warm(warm, n).unionByName(popular_unseen(self._popular, cold, self._seen, n))

    def tables(self) -> dict[str, DataFrame]:
        """What the fitted source leaves for the warehouse, by table name (one per :attr:`emits`)."""
        return {}

    @classmethod
    def serves_from_history(cls, cfg: Config, interactions: int) -> str | None:
        """Why tonight's lists come from the history fit (:meth:`served_on`) instead of a fit on all interactions,
        or None when they do not: always with ``[candidates] serve_from_history``, and for a refit-budgeted source
        when the night's ``interactions`` are more than ``[candidates] refit_max_interactions`` (a count, never the
        clock: the choice is the same whatever the machine's load)."""
        budget = cfg.candidates.refit_max_interactions
        if cls.name in cfg.candidates.serve_from_history:
            return "set in [candidates] serve_from_history"
        if cls.refit_budgeted and budget > 0 and interactions > budget:
            return f"{interactions:,} interactions, over [candidates] refit_max_interactions {budget:,}"
        return None


_REGISTRY: dict[str, type[CandidateSource]] = {}


def register(source: type[CandidateSource]) -> type[CandidateSource]:
    """Add a source class to the registry under its ``name`` (usable as a class decorator). The order of
    registration is the order of names in messages and of the ranker's feature sources."""
    if not getattr(source, "name", ""):
        raise ValueError(f"{source.__name__} has no name")
    if source.name in _REGISTRY and _REGISTRY[source.name] is not source:
        raise ValueError(f"a candidate source named {source.name!r} is registered already")
    _REGISTRY[source.name] = source
    return source


def unregister(name: str) -> None:
    """Remove source ``name`` from the registry (a test's toy source)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered source, in registration order."""
    return tuple(_REGISTRY)


def source_class(name: str) -> type[CandidateSource]:
    """The registered class of source ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no candidate source {name!r}; registered: {', '.join(_REGISTRY)}") from None


def servable_names() -> tuple[str, ...]:
    """Sources that can serve tonight's lists from their history fit."""
    return tuple(name for name, cls in _REGISTRY.items() if cls.servable)


def feature_sources() -> tuple[str, ...]:
    """Sources whose lists the ranker's features describe (each must be in ``[candidates] sources``)."""
    return tuple(name for name, cls in _REGISTRY.items() if cls.feature_prefix is not None)


def emitted() -> tuple[Emitted, ...]:
    """Every warehouse table a registered source leaves."""
    return tuple(t for cls in _REGISTRY.values() for t in cls.emits)


def kept_from_history() -> tuple[tuple[str, str], ...]:
    """``(work frame, what it holds)`` of every history-fit table a registered source keeps for later stages."""
    return tuple((t.kept_from_history, t.kept_doc) for t in emitted() if t.kept_from_history is not None)


def make(name: str, cfg: Config, work_dir: str | None = None) -> CandidateSource:
    """The unfitted source ``name`` configured from ``cfg``; a source that writes files (the sequence models'
    shards and weights) writes them under ``work_dir`` (a temporary folder when None)."""
    source = source_class(name).from_config(cfg)
    source.work_dir = work_dir
    return source


def is_baseline(name: str) -> bool:
    """Whether source ``name`` is one of the simple baselines (see :attr:`CandidateSource.baseline`)."""
    return source_class(name).baseline


def serves_from_history(name: str, cfg: Config, interactions: int) -> str | None:
    """:meth:`CandidateSource.serves_from_history` of source ``name``."""
    return source_class(name).serves_from_history(cfg, interactions)


def list_length(cfg: Config, name: str) -> int:
    """How many candidates source ``name`` proposes per user (``[candidates.<name>] n``)."""
    return cfg.candidates[name].n


def config_problems(cfg: Config) -> list[tuple[str, object, str]]:
    """``(key, value, what a valid value is)`` for each way ``[candidates]`` disagrees with the registry or the
    rest of the config: the ranker's feature sources missing from ``sources``, a source served from its history fit
    that is not fitted or whose condition fails."""
    cand = cfg.candidates
    problems: list[tuple[str, object, str]] = []
    needed = feature_sources()
    if not set(needed) <= set(cand.sources):
        problems.append(("candidates.sources", cand.sources, f"a list holding {', '.join(needed)}"))
    if not set(cand.serve_from_history) <= set(cand.sources):
        problems.append(("candidates.serve_from_history", cand.serve_from_history, "a subset of candidates.sources"))
    for name in cand.serve_from_history:
        condition = source_class(name).servable_when
        if condition is not None and not condition[0](cfg):
            problems.append(("candidates.serve_from_history", cand.serve_from_history,
                             f"without {name} unless {condition[1]}"))
    return problems
