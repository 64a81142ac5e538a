"""What the human review loop remembers and sends: incidents (decision log, open
escalations and their deadlines, matched frames, verdicts), authority report packets
and preservation requests. What verdicts and missed deadlines do is in
``pipeline/review.py``. Pure code, no Faust imports."""
