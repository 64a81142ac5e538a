"""StreamSafe with ROOST's Coop review tool.

* ``mapping``: the platform's mapping file (Coop item type, reporter and policy ids; verdicts
  of Coop actions), validated when loaded.
* ``reports``: an escalation as the body of Coop's ``POST /api/v1/report`` (pure).
* ``ledger``: the record of escalations already forwarded (a compacted topic).
* ``forwarder``: ``enforcement.escalations`` -> Coop, committed only once Coop took each one.
* ``callbacks``: Coop's signed action callbacks -> ``review.verdicts`` records (pure).
* ``server``: the HTTP service that receives those callbacks (``streamsafe coop serve``).
"""
