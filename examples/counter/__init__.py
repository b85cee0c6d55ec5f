"""The smallest replicated state machine: an in-memory counter."""
