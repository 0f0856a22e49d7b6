"""The post rows' own pure parts (``aggregator.index.posts``)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from aggregator.index.posts import json_texts


@given(st.lists(st.text()))
def test_json_texts_is_what_json_dumps_writes(items: list[str]) -> None:
    assert json_texts(items) == json.dumps(items, ensure_ascii=False)
    assert json.loads(json_texts(items)) == items
