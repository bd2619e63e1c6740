"""Rule file validation and routing, without servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from consumers.alerts import AlertConfigError, AlertSubject, load_config, parse_config
from consumers.alerts.channels import WebhookConfig
from consumers.alerts.rules import Target
from tests.alerts.conftest import make_subject

EXAMPLE = Path(__file__).resolve().parents[2] / "compose" / "alert-rules.example.yaml"
EXAMPLE_ENV = {
    "WAFERSTREAM_SMTP_PASSWORD": "pw",
    "WAFERSTREAM_SLACK_LOGIC_URL": "https://hooks.slack.example/x",
    "WAFERSTREAM_MES_WEBHOOK_URL": "https://mes.example/hook",
    "WAFERSTREAM_MES_WEBHOOK_TOKEN": "tok",
}


def minimal(**rule: Any) -> dict[str, Any]:
    return {
        "channels": {
            "hook": {"type": "webhook", "url": "https://h.example"},
            "mail": {"type": "email", "host": "smtp", "sender": "a@b"},
        },
        "groups": {"fa": {"members": ["x@fab.example"], "channels": ["mail"]}},
        "rules": [{"name": "r", "channels": ["hook"], **rule}],
    }


def test_example_file_routes_critical_logic_scratch_to_group_mes_and_scratch_experts() -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    targets = set(config.targets(make_subject(product="LOGIC-A7")))
    assert targets == {
        Target("logic-critical", "fa-mail", "alice@fab.example"),
        Target("logic-critical", "fa-mail", "bob@fab.example"),
        Target("logic-critical", "logic-fa-slack", "logic-fa-slack"),
        Target("logic-critical", "mes-webhook", "mes-webhook"),
        Target("scratch-anywhere", "fa-mail", "dave@fab.example"),
    }


def test_example_file_ignores_info_wafers_and_routes_lot_excursions() -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    assert config.targets(make_subject(level="info", score=5)) == []
    lot = make_subject().model_copy(
        update={"kind": "lot_excursion", "wafer_id": None, "excursion_cause": "tool T9"}
    )
    rules = {t.rule for t in config.targets(lot)}
    assert rules == {"lot-excursions"}


@pytest.mark.parametrize(
    ("match", "subject_kwargs", "expected"),
    [
        ({"min_score": 90}, {"score": 89.9}, False),
        ({"min_score": 90}, {"score": 90}, True),
        ({"min_level": "major"}, {"level": "minor", "score": 40}, False),
        ({"patterns": ["edge"]}, {}, False),
        ({"patterns": ["Random"]}, {}, True),  # secondary patterns count
        ({"products": "MEM-*"}, {}, False),
        ({"products": ["MEM-*", "LOGIC-?7"]}, {}, True),
        ({"testers": ["T8*"]}, {}, False),
        ({"kinds": ["lot_excursion"]}, {}, False),
    ],
)
def test_match_conditions(
    match: dict[str, Any], subject_kwargs: dict[str, Any], expected: bool
) -> None:
    config = parse_config(minimal(match=match), env={})
    assert bool(config.targets(make_subject(**subject_kwargs))) is expected


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            minimal(match={"patterns": ["scrach"]}),
            "rules.0.match.patterns: Value error, unknown pattern 'scrach'",
        ),
        (minimal(groups=["nobody"]), "rule 'r': unknown group 'nobody'"),
        (minimal(channels=["mail"]), "e-mail channel 'mail' needs recipients"),
        (minimal(match={"min_level": "severe"}), "rules.0.match.min_level"),
        ({**minimal(), "links": {"wafer": "https://fa/{lot}"}}, "unknown placeholder(s) ['lot']"),
        ({**minimal(), "rules": [{"name": "r"}]}, "notifies nobody"),
    ],
)
def test_invalid_rule_files_fail_with_a_located_message(
    data: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(AlertConfigError) as err:
        parse_config(data, env={}, source="rules.yaml")
    assert fragment in str(err.value)
    assert str(err.value).startswith("rules.yaml: ")


def test_validation_errors_never_echo_input_values() -> None:
    data = minimal()
    data["channels"]["hook"]["passwd"] = "hunter2-secret"
    with pytest.raises(AlertConfigError) as err:
        parse_config(data, env={})
    assert "channels.hook.webhook.passwd" in str(err.value)
    assert "hunter2-secret" not in str(err.value)


def test_secret_fields_are_masked_in_the_config_repr() -> None:
    config = parse_config(minimal(), env={})
    assert "h.example" not in repr(config.channels["hook"])


def test_env_references_are_expanded() -> None:
    data = minimal()
    data["channels"]["hook"]["url"] = "${HOOK_URL}"
    config = parse_config(data, env={"HOOK_URL": "https://from-env.example"})
    hook = config.channels["hook"]
    assert isinstance(hook, WebhookConfig)
    assert hook.url.get_secret_value() == "https://from-env.example"


def test_subject_validation() -> None:
    base = make_subject().model_dump() | {"dies": None, "die_labels": None}
    with pytest.raises(ValidationError, match="needs a wafer_id"):
        AlertSubject(**(base | {"wafer_id": None}))
    with pytest.raises(ValidationError, match="unknown pattern"):
        AlertSubject(**(base | {"dominant_pattern": "Spiral"}))
    dies = make_subject().dies
    assert dies is not None
    with pytest.raises(ValidationError, match="die_labels shape"):
        AlertSubject(**(base | {"dies": dies, "die_labels": dies[:-1]}))
    assert AlertSubject(**(base | {"wafer_id": 7})).wafer_id == "7"
