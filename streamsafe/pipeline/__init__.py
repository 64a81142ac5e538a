"""The per-record core, free of Faust and Kafka: what one record does to a stream.

* :mod:`.screen` -- decode, validate and match frame-hash records against the banks:
  one function for the frame pre-filter (a batch at a time) and the agent path alike.
* :mod:`.step` -- ``step(event, state, incident, context) -> Outcome`` for every kind of
  record (screened frames, classifier signals, reports, metadata, verdicts, ticks), a
  ``match`` on the typed event.
* :mod:`.outcome` -- :class:`~.outcome.Outcome`, the one result type: what to write,
  what to publish, what to count.
"""
