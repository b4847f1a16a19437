"""The worker's pure core: decode/validate, dedupe, merge and batching maths.

Nothing here imports faust, kafka or clickhouse; the agents in
``nodemeter_stream.agents`` wire these functions to topics, tables and the sink.
"""
