"""Kafka runtime on confluent-kafka: admin, producer, dead-letter queue and the consumer loop."""
