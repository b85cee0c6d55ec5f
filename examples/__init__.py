"""Example replicated state machines built on rsm."""
