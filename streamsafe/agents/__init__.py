"""Thin Faust agents: decode, call the pure policy code, publish."""
