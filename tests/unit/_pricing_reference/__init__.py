"""A frozen copy of the pricing engine as it was before the speed work (commit e006ad7).

Used only as the reference by ``test_pricing_speed_equivalence.py`` and
``bench/bench_pricing.py``: the new engine must give byte-identical lines, alerts and
states. Do not edit, except to keep it importable.
"""
