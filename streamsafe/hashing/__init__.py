"""The producer helper: PDQ and exact hashes of images and sampled video frames.

A platform runs this next to its ingest; StreamSafe itself never sees pixels.
"""
