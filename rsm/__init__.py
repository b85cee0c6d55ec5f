"""rsm: total-order replicated state machines in Python."""

__version__ = "0.1.0"
