"""Policies turn evidence and stream state into decisions; pure code, no Faust imports."""
