"""Synthetic traffic: the demo scenario and the `streamsafe simulate` generator."""
