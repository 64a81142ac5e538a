"""Authority reports in the formats authorities take, built from report packets.

``profile``   the platform profile (reporter and company fields, stream URL template)
``cybertip``  a packet -> NCMEC CyberTipline ``<report>`` and ``<fileDetails>`` (pure)
``export``    packets -> files in a directory, one line per packet that cannot be mapped
``source``    packets from the ``enforcement.reports`` topic
"""

from __future__ import annotations

__all__: list[str] = []
