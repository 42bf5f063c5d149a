"""The registry of selection strategies: one decorated function each, found by name.

A strategy turns a :class:`SelectionRequest` (the queries' vectors, a search function and the shared
dedup and contamination :class:`Rules`) into a :class:`~curator.select.Selection`. The names are
declared once, in ``curator.formats.Strategy`` (the CLI's choices and the API's schema come from
it); each has one function here, registered with ``@register_strategy``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, get_args

import numpy as np

from .dedup import Links, Near
from .errors import CuratorError
from .formats.curate import Strategy as StrategyName
from .select import Search, Selection, select_balanced, select_random, select_threshold

if TYPE_CHECKING:
    from .formats import CurateParams


@dataclass(frozen=True)
class Rules:
    """What every selection shares: how to read candidates' vectors, what is forbidden (query and
    ``--exclude`` images), the two thresholds, and the pool's cells, links and exact near-search."""
    vectors_of: Callable[[np.ndarray], np.ndarray]
    forbidden: np.ndarray
    ntotal: int
    dedup: float
    exclude_threshold: float
    cells: Optional[Callable[..., np.ndarray]] = None
    links: Links = None
    near: Near = None
    query_rows: int = 0    # the first rows of ``forbidden`` are the queries' own: what they keep out is "query"

    def kwargs(self) -> dict[str, Any]:
        """The rules as the selection functions' keyword arguments (the arrays are not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class SelectionRequest:
    """Everything a strategy may use."""
    search: Search
    vectors: np.ndarray                    # query views, L2-normalised
    owner: np.ndarray                      # the query each view belongs to
    labels: Sequence[Optional[str]]
    rules: Rules
    cancelled: Callable[[], bool] = field(default=lambda: False)

    @property
    def n_queries(self) -> int:
        return len(self.labels)


StrategyFn = Callable[[SelectionRequest, "CurateParams"], Selection]
_STRATEGIES: dict[str, StrategyFn] = {}
_NEEDS_LABELS: set[str] = set()


def register_strategy(name: StrategyName, *, needs_labels: bool = False) -> Callable[[StrategyFn], StrategyFn]:
    """Register ``fn(request, params) -> Selection`` as the implementation of the declared strategy
    ``name`` (``needs_labels``: every query must carry a label, checked when a request is validated
    rather than inside the job)."""
    if name not in get_args(StrategyName):
        raise CuratorError(f"strategy {name!r} is not declared in curator.formats.Strategy")

    def wrap(fn: StrategyFn) -> StrategyFn:
        _STRATEGIES[name] = fn
        if needs_labels:
            _NEEDS_LABELS.add(name)
        return fn
    return wrap


def strategy_names() -> list[str]:
    return list(get_args(StrategyName))


def needs_labels(name: str) -> bool:
    return name in _NEEDS_LABELS


def select(request: SelectionRequest, params: "CurateParams") -> Selection:
    if needs_labels(params.strategy) and any(label is None for label in request.labels):
        raise CuratorError(f"{params.strategy} needs a label for every query (class sub-folders or a 'label' column)")
    return _STRATEGIES[params.strategy](request, params)


@register_strategy("balanced")
def balanced(req: SelectionRequest, params: "CurateParams") -> Selection:
    """The paper's query-balanced retrieval: every query gets the same number of unique images."""
    k = params.per_query if params.per_query is not None else (params.budget or 0) // max(1, req.n_queries)
    if k <= 0:
        raise CuratorError(f"budget {params.budget} gives no image per query for {req.n_queries} queries; "
                           f"raise --budget or set --per-query")
    quotas = np.full(req.n_queries, k, dtype=np.int64)
    return select_balanced(req.search, req.owner, req.n_queries, quotas, cancelled=req.cancelled, **req.rules.kwargs())


@register_strategy("class-balanced", needs_labels=True)
def class_balanced(req: SelectionRequest, params: "CurateParams") -> Selection:
    """Each class an equal share, split evenly over its queries."""
    labels = list(req.labels)
    classes = sorted(set(labels))
    per_class = (params.per_query * max(labels.count(c) for c in classes) if params.per_query
                 else (params.budget or 0) // len(classes))
    quotas = np.array([per_class // labels.count(lab) for lab in labels], dtype=np.int64)
    if quotas.min() <= 0:
        raise CuratorError(f"budget {params.budget} is too small for {len(classes)} classes; raise --budget")
    return select_balanced(req.search, req.owner, req.n_queries, quotas, cancelled=req.cancelled, **req.rules.kwargs())


@register_strategy("threshold")
def threshold(req: SelectionRequest, params: "CurateParams") -> Selection:
    """Everything above a similarity, best first, up to the budget."""
    return select_threshold(req.search, req.owner, req.n_queries, params.threshold, params.budget, **req.rules.kwargs())


@register_strategy("random")
def random_draw(req: SelectionRequest, params: "CurateParams") -> Selection:
    """The paper's control: a uniform pool draw of the same size, under the same rules."""
    budget = params.budget or params.per_query * req.n_queries
    return select_random(req.vectors, req.owner, budget, params.seed, **req.rules.kwargs())


_missing = set(get_args(StrategyName)) - set(_STRATEGIES)
if _missing:  # a declared name without an implementation is a programming error, found at import
    raise CuratorError(f"strategies declared in curator.formats.Strategy without an implementation: {sorted(_missing)}")
