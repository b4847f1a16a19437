"""Analyst side of nodemeter: the SQL query library, rollup rebuilds, cost reports.

queries.py    load and run the parameterized queries in ``sql/queries/``
rebuild.py    refill the rollup tables from the base tables (truncate + INSERT SELECT)
policies.py   per-tenant analyst access: users and row policies
report.py     per-node cost report: data (from the query library) and a terminal table
html.py       the same report as one self-contained HTML page (inline SVG)
progress.py   progress lines on stderr for long operations
*_cli.py      ``nodemeter report`` / ``sql`` / ``rebuild``
"""
