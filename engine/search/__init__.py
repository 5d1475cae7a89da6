"""Message search (node floor): an index of every logged message's metadata, and the part that keeps it up."""

from engine.search.follower import SearchFollower, catch_up, catch_up_files
from engine.search.index import INDEX_FILE, SearchIndex, Tip
from engine.search.rows import (
    MessageRow,
    Outcome,
    SearchQuery,
    control_id_of,
    decode_row,
    header_metadata,
    row_of,
    sender_of,
)

__all__ = [
    "INDEX_FILE",
    "MessageRow",
    "Outcome",
    "SearchFollower",
    "SearchIndex",
    "SearchQuery",
    "Tip",
    "catch_up",
    "catch_up_files",
    "control_id_of",
    "decode_row",
    "header_metadata",
    "row_of",
    "sender_of",
]
