"""Ingest stage (pure): decode and validate, dedupe, merge, plan a batch, map rows.

Nothing here imports faust, kafka or clickhouse (enforced by
``tests/unit/test_import_contracts.py``); ``nodemeter_stream.agents.ingest`` wires it.
"""
