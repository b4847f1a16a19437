"""Faust agents: thin wiring from topics and tables to the pure core and the sink."""
