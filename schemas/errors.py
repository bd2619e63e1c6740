"""Errors raised while decoding or validating events.

Everything here means *poison input*: retrying cannot help, so the consumer
loop sends the record to the dead-letter topic with the error named in its
headers and moves on.
"""

from __future__ import annotations


class EventError(Exception):
    """Base class: this record can never be processed as it is."""

    kind = "event_error"


class UndecodableEvent(EventError):
    """The bytes are not a payload in a known wire format / schema."""

    kind = "undecodable"


class SchemaViolation(EventError):
    """The record does not conform to its Avro schema."""

    kind = "schema_violation"


class InvalidEvent(EventError):
    """Schema-valid, but a value is impossible (bad id, inconsistent die map, ...)."""

    kind = "invalid_value"
