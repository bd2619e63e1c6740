"""Severity processor: wafer-segmented -> metrics, severity, lot excursions.

``metrics`` and ``scoring`` are pure (numpy only) so the numbers can be
tested and reused without Kafka or a database; ``lot`` is the pure lot-rule
logic; ``processor`` wires them to the consumer loop, PostgreSQL and the topics.
"""
