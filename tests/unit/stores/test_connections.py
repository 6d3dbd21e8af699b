"""How bulk Cassandra writes are grouped into batches (``stores.connections.batches_by_replicas``)."""

from __future__ import annotations

from stores.connections import batches_by_replicas

REPLICAS = {"a": {"n1", "n2"}, "b": {"n2", "n1"}, "c": {"n3"}, "d": {"n1", "n2"}, "e": {"n3"}}


def test_rows_of_different_replica_sets_never_share_a_batch() -> None:
    batches = batches_by_replicas(list("abcde"), REPLICAS.__getitem__, rows_per_batch=10)
    assert sorted(map(sorted, batches)) == [["a", "b", "d"], ["c", "e"]]


def test_batches_hold_at_most_rows_per_batch_and_every_row_once() -> None:
    rows = [f"row{i}" for i in range(12)]
    batches = batches_by_replicas(rows, lambda _: {"n1"}, rows_per_batch=5)
    assert [len(batch) for batch in batches] == [5, 5, 2]
    assert [row for batch in batches for row in batch] == rows


def test_no_rows_no_batches() -> None:
    assert batches_by_replicas([], REPLICAS.__getitem__, rows_per_batch=5) == []
