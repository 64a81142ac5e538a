"""Bridges to the trust-and-safety tools platforms already run (each in its own room)."""
