"""What the notifier is told about: one assessed wafer or one lot excursion.

Why a model of our own instead of the Avro records: the notifier must not care
how events travel (Avro over Kafka today, anything tomorrow). The caller decodes
and builds an :class:`AlertSubject`; validation here is the contract, so a
malformed event fails loudly at the boundary instead of half-way through a
delivery.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ml.taxonomy import PATTERNS


class SeverityLevel(StrEnum):
    """Severity levels, declared in increasing order so rules can say "at least"."""

    INFO = "info"
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Position in the ordering info < minor < major < critical."""
        return list(SeverityLevel).index(self)


def check_pattern(name: str) -> str:
    """Reject pattern names outside the shared taxonomy (typos would never match)."""
    if name not in PATTERNS:
        raise ValueError(f"unknown pattern {name!r}; expected one of {', '.join(PATTERNS)}")
    return name


class Cluster(BaseModel):
    """One connected group of failing dies, as summarised by the analyser."""

    model_config = ConfigDict(frozen=True)

    pattern: str
    die_count: int = Field(ge=0)
    centroid_mm: tuple[float, float]

    _pattern = field_validator("pattern")(check_pattern)


def _as_grid(value: Any) -> np.ndarray | None:
    """Coerce array-likes to a 2-D integer ndarray (None stays None)."""
    if value is None:
        return None
    grid = np.asarray(value)
    if grid.ndim != 2 or not np.issubdtype(grid.dtype, np.integer):
        raise ValueError(f"expected a 2-D integer grid, got shape {grid.shape} dtype {grid.dtype}")
    return grid


class AlertSubject(BaseModel):
    """An event the notifier may alert on.

    ``dies`` (0 no die, 1 pass, 2 fail) and ``die_labels`` (0 background,
    k = ``PATTERNS[k]``) are optional: without them an e-mail simply carries
    no picture. They never leave the process except as the rendered PNG.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    kind: Literal["wafer", "lot_excursion"]
    event_id: Annotated[str, Field(min_length=1)]
    lot_id: Annotated[str, Field(min_length=1)]
    wafer_id: str | None = None
    product: str
    tester: str | None = None
    severity_score: float = Field(ge=0, le=100)
    severity_level: SeverityLevel
    dominant_pattern: str
    patterns: list[str] = Field(default_factory=list)
    top_clusters: list[Cluster] = Field(default_factory=list)
    excursion_cause: str | None = None
    occurred_at: AwareDatetime
    dies: np.ndarray | None = Field(default=None, exclude=True, repr=False)
    die_labels: np.ndarray | None = Field(default=None, exclude=True, repr=False)

    _dominant = field_validator("dominant_pattern")(check_pattern)

    @field_validator("wafer_id", mode="before")
    @classmethod
    def _wafer_id_text(cls, value: Any) -> Any:
        """Avro may carry wafer numbers as ints; keys and links want text."""
        return str(value) if isinstance(value, int) else value

    @field_validator("patterns")
    @classmethod
    def _known_patterns(cls, value: list[str]) -> list[str]:
        return [check_pattern(p) for p in value]

    @field_validator("dies", "die_labels", mode="before")
    @classmethod
    def _grid(cls, value: Any) -> np.ndarray | None:
        return _as_grid(value)

    @model_validator(mode="after")
    def _consistent(self) -> AlertSubject:
        if self.kind == "wafer" and self.wafer_id is None:
            raise ValueError("a wafer event needs a wafer_id")
        if self.kind == "lot_excursion" and self.wafer_id is not None:
            raise ValueError("a lot_excursion event has no wafer_id")
        if self.die_labels is not None:
            if self.dies is None:
                raise ValueError("die_labels given without dies")
            if self.die_labels.shape != self.dies.shape:
                raise ValueError(
                    f"die_labels shape {self.die_labels.shape} != dies shape {self.dies.shape}"
                )
        return self

    @property
    def all_patterns(self) -> frozenset[str]:
        """Dominant plus secondary patterns: what pattern rules are matched against."""
        return frozenset((self.dominant_pattern, *self.patterns))

    @property
    def wafer_key(self) -> str:
        """The unit dedup works on: ``lot/wafer``, or ``lot/-/cause`` for a lot event.

        A lot can have several excursions (another cause, another pattern);
        each is news to FA, so the cause is part of a lot event's key.
        """
        if self.kind == "lot_excursion":
            return f"{self.lot_id}/-/{self.excursion_cause or ''}"
        return f"{self.lot_id}/{self.wafer_id or '-'}"

    def summary(self) -> dict[str, Any]:
        """JSON-safe description (no die grids) for webhooks and the dead-letter topic."""
        return self.model_dump(mode="json")
