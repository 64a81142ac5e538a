"""Risk that follows an account across its streams: signals, state, the account step and its shell."""
