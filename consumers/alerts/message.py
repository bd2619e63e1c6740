"""Turning an assessed wafer (or a held-back batch) into readable alert content.

Why here and not in the channels: every channel must tell the same story
(same headline, same link, same numbers); channels only lay it out.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from consumers.alerts.channels import Message
from consumers.alerts.rules import Links
from consumers.alerts.subject import AlertSubject

#: How many clusters an alert lists; more is noise in a notification.
_MAX_CLUSTERS = 3


def _mm(point: tuple[float, float]) -> str:
    return f"({point[0]:.1f}, {point[1]:.1f}) mm"


def build_link(links: Links, subject: AlertSubject) -> str | None:
    """Fill the wafer (or lot) template, URL-quoting every value."""
    template = links.wafer if subject.kind == "wafer" else links.lot
    if template is None:
        return None
    values = {
        "lot_id": subject.lot_id,
        "wafer_id": subject.wafer_id or "",
        "product": subject.product,
        "tester": subject.tester or "",
        "event_id": subject.event_id,
    }
    return template.format_map({k: quote(v, safe="") for k, v in values.items()})


def headline(subject: AlertSubject) -> str:
    """One line naming severity, pattern and where, e.g. for a mail subject."""
    level = subject.severity_level.value.upper()
    if subject.kind == "wafer":
        where = f"wafer {subject.lot_id}/{subject.wafer_id}"
        return f"{level} {subject.dominant_pattern} on {where} ({subject.product})"
    return f"{level} lot excursion {subject.lot_id} ({subject.product}): {subject.dominant_pattern}"


def detail_lines(subject: AlertSubject) -> tuple[str, ...]:
    """Severity, patterns, top clusters, cause: what the title of the picture also shows."""
    lines = [
        f"Severity: {subject.severity_level.value} ({subject.severity_score:.0f}/100)",
        f"Product: {subject.product}  Tester: {subject.tester or '-'}",
        f"Patterns: {', '.join(sorted(subject.all_patterns))}",
    ]
    lines += [
        f"Cluster: {c.pattern}, {c.die_count} dies at {_mm(c.centroid_mm)}"
        for c in subject.top_clusters[:_MAX_CLUSTERS]
    ]
    if subject.excursion_cause:
        lines.append(f"Excursion cause: {subject.excursion_cause}")
    lines.append(f"Occurred: {subject.occurred_at.isoformat()}")
    return tuple(lines)


def compose_alert(
    subject: AlertSubject,
    *,
    rule: str,
    alert_id: int,
    link: str | None,
    png: bytes | None,
) -> Message:
    """The message for one alert row."""
    return Message(
        headline=headline(subject),
        lines=(*detail_lines(subject), f"Rule: {rule}  Alert #{alert_id}"),
        payload={"type": "alert", "alert_id": alert_id, "rule": rule, "subject": subject.summary()},
        link=link,
        png=png,
        png_name=f"{subject.lot_id}_{subject.wafer_id or 'lot'}.png",
    )


def digest_item(
    subject: AlertSubject, *, rule: str, alert_id: int, link: str | None
) -> dict[str, Any]:
    """The compact JSON form an alert takes while it waits in a digest list."""
    return {
        "alert_id": alert_id,
        "rule": rule,
        "headline": headline(subject),
        "lot_id": subject.lot_id,
        "wafer_id": subject.wafer_id,
        "severity_level": subject.severity_level.value,
        "severity_score": subject.severity_score,
        "link": link,
    }


def compose_digest(items: list[dict[str, Any]]) -> Message:
    """One message summarising alerts held back by the rate limit."""
    lines = tuple(
        f"#{i['alert_id']} {i['headline']}" + (f" {i['link']}" if i["link"] else "") for i in items
    )
    return Message(
        headline=f"Digest: {len(items)} more wafer alert(s) held back by the rate limit",
        lines=lines,
        payload={"type": "digest", "count": len(items), "alerts": items},
    )


def title_lines(subject: AlertSubject) -> tuple[str, ...]:
    """Caption burnt into the PNG, so a forwarded picture still says what it is."""
    top = subject.top_clusters[:_MAX_CLUSTERS]
    severity = f"{subject.severity_level.value} {subject.severity_score:.0f}/100"
    return (
        f"{subject.product}  lot {subject.lot_id}  wafer {subject.wafer_id or '-'}",
        f"{severity}  {subject.dominant_pattern}",
        *(f"{c.pattern}: {c.die_count} dies @ {_mm(c.centroid_mm)}" for c in top),
    )
