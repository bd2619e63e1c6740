"""The alert rule file: who is told about which wafers, over which channels.

Why a YAML file validated by pydantic: FA leads edit routing (new product
family, new engineer) far more often than code changes, and a typo in a
pattern name or a group reference must stop the notifier at start-up with a
message that names the line's path, not silently never alert.

Secret values may be written as ``${ENV_VAR}`` so the file can be committed
while webhook URLs and SMTP passwords come from the environment.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consumers.alerts.channels import ChannelConfig
from consumers.alerts.subject import AlertSubject, SeverityLevel
from ml.taxonomy import PATTERNS, SPEC_ALIASES

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_LINK_FIELDS = frozenset({"lot_id", "wafer_id", "product", "tester", "event_id"})


class AlertConfigError(ValueError):
    """The rule file is unreadable or invalid; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Match(_Strict):
    """Conditions of a rule; every condition given must hold (omitted = any)."""

    kinds: frozenset[Literal["wafer", "lot_excursion"]] = frozenset({"wafer", "lot_excursion"})
    min_level: SeverityLevel | None = None
    min_score: float | None = Field(default=None, ge=0, le=100)
    patterns: frozenset[str] | None = Field(
        default=None, description="taxonomy names or spec aliases (edge, ring, particle, ...)"
    )
    products: tuple[str, ...] | None = Field(default=None, description="glob patterns")
    testers: tuple[str, ...] | None = Field(default=None, description="glob patterns")

    @field_validator("patterns", mode="before")
    @classmethod
    def _expand_aliases(cls, value: Any) -> Any:
        """Accept the fab's spec names and store canonical taxonomy names only."""
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        names: set[str] = set()
        for item in value:
            if item in PATTERNS:
                names.add(item)
            elif str(item).lower() in SPEC_ALIASES:
                names.update(SPEC_ALIASES[str(item).lower()])
            else:
                known = ", ".join([*PATTERNS, *SPEC_ALIASES])
                raise ValueError(f"unknown pattern {item!r}; expected one of {known}")
        return frozenset(names)

    @field_validator("products", "testers", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def matches(self, subject: AlertSubject) -> bool:
        """True when ``subject`` satisfies every condition of this match block."""
        if subject.kind not in self.kinds:
            return False
        if self.min_level is not None and subject.severity_level.rank < self.min_level.rank:
            return False
        if self.min_score is not None and subject.severity_score < self.min_score:
            return False
        if self.patterns is not None and not (self.patterns & subject.all_patterns):
            return False
        if self.products is not None and not _glob_any(subject.product, self.products):
            return False
        return self.testers is None or _glob_any(subject.tester, self.testers)


def _glob_any(value: str | None, globs: tuple[str, ...]) -> bool:
    return value is not None and any(fnmatchcase(value, g) for g in globs)


class Rule(_Strict):
    """A named condition and whom to tell. The name keys dedup and the alert rows."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    match: Match = Field(default_factory=Match)
    groups: tuple[str, ...] = ()
    channels: tuple[str, ...] = Field(
        default=(), description="endpoint channels (webhook, slack) notified directly"
    )

    @model_validator(mode="after")
    def _has_destination(self) -> Rule:
        if not self.groups and not self.channels:
            raise ValueError(f"rule {self.name!r} notifies nobody: give groups or channels")
        return self


class Group(_Strict):
    """Subscribers, e.g. the FA engineers of one product family or one pattern.

    ``channels`` lists how the group is reached: an e-mail channel sends to each
    address in ``members``; a webhook/Slack channel posts once (the group's chat).
    """

    members: tuple[str, ...] = ()
    channels: tuple[str, ...] = Field(min_length=1)


class RateLimit(_Strict):
    """At most ``max_alerts`` per channel and recipient in each ``window_s`` window."""

    max_alerts: int = Field(gt=0)
    window_s: float = Field(gt=0)


class ThrottleSettings(_Strict):
    """No-spam settings; see docs/alerts.md for the exact semantics."""

    dedup_ttl_s: float = Field(default=6 * 3600, gt=0)
    #: How long one instance owns an alert it is delivering. Longer than the
    #: slowest delivery with every retry; after a crash the replayed alert is
    #: re-sent once the lease of the dead instance has lapsed.
    delivery_lease_s: float = Field(default=180.0, gt=0)
    rate_limit: RateLimit = RateLimit(max_alerts=20, window_s=600)
    per_channel: dict[str, RateLimit] = Field(default_factory=dict)

    def limit_for(self, channel: str) -> RateLimit:
        return self.per_channel.get(channel, self.rate_limit)


class RetrySettings(_Strict):
    """Capped exponential backoff with full jitter between delivery attempts."""

    max_attempts: int = Field(default=5, ge=1)
    base_delay_s: float = Field(default=1.0, ge=0)
    max_delay_s: float = Field(default=60.0, ge=0)


class Links(_Strict):
    """URL templates into the FA engineer's own tools.

    Placeholders: ``{lot_id}``, ``{wafer_id}``, ``{product}``, ``{tester}``,
    ``{event_id}``; values are URL-quoted when filled in.
    """

    wafer: str | None = None
    lot: str | None = None

    @field_validator("wafer", "lot")
    @classmethod
    def _known_fields(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"bad link template {value!r}: {exc}") from None
        unknown = used - _LINK_FIELDS
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {sorted(unknown)} in {value!r}; "
                f"allowed: {sorted(_LINK_FIELDS)}"
            )
        return value


@dataclass(frozen=True)
class Target:
    """One (rule, channel, recipient) an event must reach; the alert row's identity."""

    rule: str
    channel: str
    recipient: str


class AlertConfig(_Strict):
    """The whole rule file."""

    channels: dict[str, ChannelConfig]
    groups: dict[str, Group] = Field(default_factory=dict)
    rules: tuple[Rule, ...]
    throttle: ThrottleSettings = ThrottleSettings()
    retry: RetrySettings = RetrySettings()
    links: Links = Links()

    @model_validator(mode="after")
    def _references(self) -> AlertConfig:
        """Cross-check names so a dangling reference fails at load, not at 3 a.m."""
        errors: list[str] = []
        for gname, group in self.groups.items():
            for ch in group.channels:
                if ch not in self.channels:
                    errors.append(f"group {gname!r}: unknown channel {ch!r}")
                elif self.channels[ch].type == "email" and not group.members:
                    errors.append(f"group {gname!r}: e-mail channel {ch!r} but no members")
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                errors.append(f"rule {rule.name!r}: duplicate name")
            seen.add(rule.name)
            errors += [
                f"rule {rule.name!r}: unknown group {g!r}"
                for g in rule.groups
                if g not in self.groups
            ]
            for ch in rule.channels:
                if ch not in self.channels:
                    errors.append(f"rule {rule.name!r}: unknown channel {ch!r}")
                elif self.channels[ch].type == "email":
                    errors.append(
                        f"rule {rule.name!r}: e-mail channel {ch!r} needs recipients; "
                        "route it through a group"
                    )
        errors += [
            f"throttle.per_channel: unknown channel {ch!r}"
            for ch in self.throttle.per_channel
            if ch not in self.channels
        ]
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def targets(self, subject: AlertSubject) -> list[Target]:
        """All distinct (rule, channel, recipient) triples ``subject`` must reach."""
        found: dict[Target, None] = {}
        for rule in self.rules:
            if not rule.match.matches(subject):
                continue
            for ch in rule.channels:
                found[Target(rule.name, ch, ch)] = None
            for gname in rule.groups:
                group = self.groups[gname]
                for ch in group.channels:
                    if self.channels[ch].type == "email":
                        for member in group.members:
                            found[Target(rule.name, ch, member)] = None
                    else:
                        found[Target(rule.name, ch, ch)] = None
        return list(found)


def _expand_env(node: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace whole-string ``${VAR}`` values by the environment's value."""
    if isinstance(node, dict):
        return {k: _expand_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, env, f"{path}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str) and (m := _ENV_REF.match(node)):
        if m.group(1) not in env:
            raise AlertConfigError(f"{path}: environment variable {m.group(1)} is not set")
        return env[m.group(1)]
    return node


def parse_config(
    data: Any, *, env: Mapping[str, str] | None = None, source: str = "<rules>"
) -> AlertConfig:
    """Validate already-parsed YAML data; errors are flattened into one readable message."""
    try:
        return AlertConfig.model_validate(_expand_env(data, os.environ if env is None else env))
    except AlertConfigError as exc:
        raise AlertConfigError(f"{source}: {exc}") from None
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        ]
        listing = "\n  ".join(problems)
        raise AlertConfigError(f"{source}: invalid alert rules:\n  {listing}") from None


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> AlertConfig:
    """Read and validate the rule file at ``path``."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise AlertConfigError(f"{path}: cannot read alert rules: {exc}") from None
    return parse_config(data, env=env, source=str(path))
