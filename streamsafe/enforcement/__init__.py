"""Publishing decisions and dead letters: one interface, a Kafka implementation, an in-memory fake."""

from streamsafe.enforcement.publisher import DecisionPublisher, InMemoryPublisher

__all__ = ["DecisionPublisher", "InMemoryPublisher"]
