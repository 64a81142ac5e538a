"""The human review loop: incidents, verdicts, review SLAs, authority reports and
preservation requests. Pure code, no Faust imports."""
