"""StreamSafe: live-stream child-safety event processing on Kafka.

The stream machinery (Faust) lives in :mod:`streamsafe.app` and
:mod:`streamsafe.agents`; everything that decides what happens to a stream is
plain Python under :mod:`streamsafe.events`, :mod:`streamsafe.matching`,
:mod:`streamsafe.scoring` and :mod:`streamsafe.policy`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
