"""Metrics, health endpoints and structured logs for the people who keep StreamSafe running."""
