"""A frozen copy of the pricing engine as it was before the speed work (commit e006ad7).

Used only as the reference by ``test_pricing_speed_equivalence.py`` and
``bench/bench_pricing.py``: the new engine must give byte-identical lines, alerts and
states. Do not edit, except to keep it importable.
"""

from pathlib import Path as _Path
from typing import Any as _Any


def example_documents(examples: _Path) -> list[tuple[str, _Any]]:
    """The example price books as (source, document), as this reference reads them:
    price book ``aliases`` are newer than it (its loader refuses the field) and are taken
    out. Events that use the rates' own names price the same without them."""
    import yaml

    docs = [(str(f), yaml.safe_load(f.read_text())) for f in sorted(examples.glob("*.yaml"))]
    for _, doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("price_book"), dict):
            doc["price_book"].pop("aliases", None)
    return docs
