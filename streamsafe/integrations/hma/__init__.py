"""Meta's Hasher-Matcher-Actioner (HMA 2.0, OpenMediaMatch) both ways: its banks mirrored
into ``hashbank.entries`` (:mod:`.sync`, reading HMA's PostgreSQL), and hashes confirmed by
StreamSafe's reviewers written back to an HMA bank through its API (:mod:`.writeback`)."""
