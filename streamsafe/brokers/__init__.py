"""Broker lifecycle (Apache Kafka from Maven Central, embedded Tansu) and topic administration."""
