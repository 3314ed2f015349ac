"""A user's served list must not depend on which other users share the batch."""

from __future__ import annotations

from tlrec.serving.served_model import ServedModel


def test_lists_do_not_depend_on_the_batch(world):
    served = ServedModel.load(world.ncf_version)
    users = served.users.to_external(range(0, len(served.users), 7))
    batch = served.recommend(users, 10, exclude_seen=True)
    for user, together in zip(users, batch):
        (alone,) = served.recommend([user], 10, exclude_seen=True)
        assert alone.item_ids == together.item_ids, user


def test_history_lists_do_not_depend_on_the_batch(world):
    served = ServedModel.load(world.ncf_version)
    histories = [served.items.to_external(served.seen[u].indices) for u in range(0, len(served.users), 9)]
    batch = served.recommend_history(histories, 10)
    for history, together in zip(histories, batch):
        (alone,) = served.recommend_history([history], 10)
        assert alone.item_ids == together.item_ids
        assert not set(alone.item_ids) & set(history), "history items must not be recommended again"
