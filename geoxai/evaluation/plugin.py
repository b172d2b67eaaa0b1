"""The plugin contract: what an evaluation plugin declares, returns, and how its records are checked.

A plugin scores pairs of images. ``score(pairs, ctx)`` receives every pair of the pairings it
declares (``generated``: an original and one of its generations; ``shuffled``: an original and the
generation of a query of another place, the chance level; ``reference``: an original and another
real photo of its place, what a real re-visit changes) and returns one record per pair:

    pair.record(cosine=0.83, recall@1=100.0)                 # metric -> value
    pair.record(delta_L=Skip("image too dark"))              # an explicit skip, with its reason

Every pair given needs a record (a value or a ``Skip``); a plugin that leaves pairs out fails,
with an error naming how many pairs of which pairing are missing. Extra records (per-original rows
with sample -1, an analytic ``chance`` pairing) are allowed.

The runner turns records into the long format (``query_id, sample, plugin, metric, value,
pairing, skip_reason``), refuses malformed ones with the plugin's name, and ``summarize`` turns
them into table rows (default: per query the mean over samples, then mean and 95% bootstrap CI
over queries). Artifacts a plugin reads (``needs``) are computed once per image by the runner.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from geoxai.errors import GeoxaiError
from geoxai.evaluation.artifacts import KINDS
from geoxai.registry import PLUGINS, load

if TYPE_CHECKING:
    from geoxai.evaluation.context import EvaluationContext

PAIRINGS = ("generated", "shuffled", "reference")
RECORD_PAIRINGS = (*PAIRINGS, "chance")  # "chance": an analytic chance level a plugin computes itself
RECORD_COLUMNS = ("query_id", "sample", "plugin", "metric", "value", "pairing", "skip_reason")


@dataclass(frozen=True)
class Metric:
    """What a metric means: its one-line definition, and which direction is better (None: neither)."""

    definition: str
    higher_is_better: bool | None = None
    unit: str = ""


@dataclass(frozen=True)
class Model:
    """A model a plugin uses, shown with its licence in ``geoxai plugins`` and in results.json."""

    name: str
    licence: str
    source: str = ""


@dataclass(frozen=True)
class Skip:
    """An explicit skip of one metric value, with the reason (kept in records and counted)."""

    reason: str


@dataclass(frozen=True)
class Pair:
    """Two images to compare: the original query photo and ``other`` (a generation or a real photo)."""

    query_id: str
    sample: int  # the generation's sample index; -1 for a reference photo
    pairing: str
    original: Path
    other: Path
    partner: str = ""  # shuffled: the query whose generation this is; reference: the photo's name
    utm: tuple[float, float] = (math.nan, math.nan)  # the original query's position

    def record(self, **metrics: float | Skip) -> dict[str, Any]:
        """A record for this pair: ``metric -> value`` (or ``Skip(reason)``)."""
        return {"query_id": self.query_id, "sample": self.sample, "pairing": self.pairing, **metrics}


class Plugin:
    """Base class of evaluation plugins (entry-point group ``geoxai.plugins``).

    Subclasses set ``name``, ``version``, ``description``, ``needs`` (artifact kinds, ``geoxai.evaluation.artifacts.KINDS``),
    ``metrics`` (name -> ``Metric``) and implement ``score``. ``pairings`` limits the pairings the
    plugin is given; ``models`` lists the models it uses with their licences; ``headline`` names the
    metrics the report's summary shows (default: the first two with a better direction).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    pairings: ClassVar[tuple[str, ...]] = PAIRINGS
    metrics: ClassVar[Mapping[str, Metric]] = {}
    models: ClassVar[tuple[Model, ...]] = ()
    headline: ClassVar[tuple[str, ...]] = ()
    segmentation_classes: ClassVar[tuple[int, ...]] = ()  # canonical ids the segmenter must express

    def score(self, pairs: list[Pair], ctx: EvaluationContext) -> Iterable[Mapping[str, Any]]:
        """One record per pair (``pair.record(metric=value, ...)``), none left out: ``Skip(reason)``
        for a value that cannot be computed."""
        raise NotImplementedError

    def summarize(self, records: pd.DataFrame, ctx: EvaluationContext) -> pd.DataFrame:
        """Rows of the summary table: by default per (metric, pairing) the mean over queries of each
        query's mean over samples, with a 95% bootstrap CI. Override to add set-level metrics."""
        from geoxai.statistics import summarize_records

        return summarize_records(records, seed=ctx.seed)

    # ------------------------------------------------------------------------------ metadata
    @classmethod
    def info(cls) -> dict[str, Any]:
        """Everything ``geoxai plugins`` and results.json show about the plugin."""
        try:
            where = f"{inspect.getsourcefile(cls)}:{inspect.getsourcelines(cls)[1]}"
        except (OSError, TypeError):
            where = f"{cls.__module__}.{cls.__qualname__}"
        return {"name": cls.name, "version": str(cls.version), "description": cls.description,
                "needs": list(cls.needs), "pairings": list(cls.pairings),
                "segmentation_classes": list(cls.segmentation_classes),
                "metrics": {k: {"definition": m.definition, "higher_is_better": m.higher_is_better, "unit": m.unit}
                            for k, m in cls.metrics.items()},
                "models": [{"name": m.name, "licence": m.licence, "source": m.source} for m in cls.models],
                "headline": list(cls.headline),
                "defined_at": where}


def check_plugin_class(cls: Any, spec: str) -> type[Plugin]:
    """Refuse a loaded object that is not a usable Plugin subclass, naming what is wrong."""
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise GeoxaiError(f"plugin {spec!r}: {getattr(cls, '__qualname__', cls)!r} is not a "
                          "geoxai.evaluation.Plugin subclass")
    problems = []
    if not cls.name:
        problems.append("no name")
    if not cls.metrics:
        problems.append("no metrics")
    unknown = [n for n in cls.needs if n not in KINDS]
    if unknown:
        problems.append(f"unknown needs {unknown} (known: {', '.join(KINDS)})")
    wrong = [p for p in cls.pairings if p not in PAIRINGS]
    if wrong:
        problems.append(f"unknown pairings {wrong} (known: {', '.join(PAIRINGS)})")
    undeclared = [m for m in cls.headline if m not in cls.metrics]
    if undeclared:
        problems.append(f"headline metrics {undeclared} are not in metrics")
    if problems:
        raise GeoxaiError(f"plugin {spec!r} ({cls.__module__}.{cls.__qualname__}): {'; '.join(problems)}")
    return cls


def parse_plugins(text: str | Sequence[str]) -> list[str]:
    """``--plugins`` as a list of names: comma-separated, spaces around names allowed."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(item).strip() for item in items]
    if not names or not any(names):
        raise GeoxaiError("--plugins is empty; name at least one plugin (see `geoxai plugins`), e.g. --plugins recall")
    if any(not name for name in names):
        raise GeoxaiError(f"--plugins {text!r}: an empty name between commas; write e.g. recall,lighting")
    bad = [name for name in names if any(c.isspace() for c in name)]
    if bad:
        raise GeoxaiError(f"--plugins: {bad[0]!r} contains a space; separate names with commas (recall,lighting)")
    if len(set(names)) != len(names):
        raise GeoxaiError(f"--plugins {text!r}: a plugin is named twice")
    return names


def load_plugin(spec: str) -> type[Plugin]:
    """The plugin class for a registered name, ``module:Class`` or ``file.py:Class``.

    An unknown name is a ``GeoxaiError`` with "did you mean"; an error raised while importing the
    plugin's own code propagates (the runner records it and goes on with the other plugins).
    """
    return check_plugin_class(load(PLUGINS, spec), spec)


def to_long_records(plugin: type[Plugin], records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """A plugin's records in the long format, checked: known metrics and pairings, finite values or
    an explicit ``Skip``. Anything else is a ``GeoxaiError`` naming the plugin and the culprit."""
    name = plugin.name
    if isinstance(records, pd.DataFrame):
        records = records.to_dict("records")
    rows: list[tuple] = []
    for number, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise GeoxaiError(f"plugin {name}: record {number} is a {type(record).__name__}, not a mapping "
                              "(return pair.record(metric=value, ...))")
        missing = [k for k in ("query_id", "sample", "pairing") if k not in record]
        if missing:
            raise GeoxaiError(f"plugin {name}: record {number} lacks {', '.join(missing)} (build records with "
                              "pair.record(...))")
        pairing = str(record["pairing"])
        if pairing not in RECORD_PAIRINGS:
            raise GeoxaiError(f"plugin {name}: record {number} has pairing {pairing!r}; use one of "
                              f"{', '.join(RECORD_PAIRINGS)}")
        try:
            sample = int(record["sample"])
        except (TypeError, ValueError):
            raise GeoxaiError(f"plugin {name}: record {number} has a non-integer sample {record['sample']!r}") from None
        for metric, value in record.items():
            if metric in ("query_id", "sample", "pairing"):
                continue
            if metric not in plugin.metrics:
                raise GeoxaiError(f"plugin {name}: record {number} has metric {metric!r}, which the plugin does not "
                                  f"declare (metrics: {', '.join(plugin.metrics)})")
            if isinstance(value, Skip):
                rows.append((str(record["query_id"]), sample, name, metric, float("nan"), pairing,
                             value.reason or "skipped"))
                continue
            try:
                number_value = float(value)
            except (TypeError, ValueError):
                raise GeoxaiError(f"plugin {name}: metric {metric} of record {number} is {value!r}, not a number "
                                  "(use Skip(reason) for a value that cannot be computed)") from None
            if not np.isfinite(number_value):
                raise GeoxaiError(f"plugin {name}: metric {metric} of query {record['query_id']} sample {sample} is "
                                  f"{number_value}; return Skip(reason) instead of a non-finite value")
            rows.append((str(record["query_id"]), sample, name, metric, number_value, pairing, ""))
    frame = pd.DataFrame(rows, columns=list(RECORD_COLUMNS))
    return frame.astype({"query_id": str, "sample": "int64", "plugin": str, "metric": str, "value": "float64",
                         "pairing": str, "skip_reason": str})


@dataclass
class PluginOutcome:
    """What happened to one plugin in an evaluation."""

    name: str
    status: str  # ok | failed | reused
    records: int = 0
    seconds: float = 0.0
    error: str = ""
    info: dict[str, Any] = field(default_factory=dict)
