"""Per-stream evidence and risk state; pure code, no Faust imports."""
