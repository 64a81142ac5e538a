"""Former home of the PDQ index, now the ``streamsafe.matching.pdq`` package; kept for
``streamsafe.app``, which imports ``warm_up`` from here."""

from streamsafe.matching.pdq import warm_up

__all__ = ["warm_up"]
