"""The wire contract: topic definitions, decoding and validation of inputs, encoding of outputs.

Pure code, no Faust imports.
"""
