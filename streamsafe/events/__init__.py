"""The wire contract: topic definitions, decoding and validation of inputs, encoding of outputs; pure code, no Faust imports."""
