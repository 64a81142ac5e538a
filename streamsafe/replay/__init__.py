"""Replay recorded traffic through the real pipeline, and evaluate policies on labelled scenarios."""
