"""The next-item model (SASRec over hybrid item vectors): known answers on planted sequences,
the sequence container it reads, save/load, and the served sequence path."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from tlrec.tables import Columns
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models import build_model
from tlrec.training.models.sasrec import SASRecModel, training_windows
from tlrec.training.sequences import PAD, TIME_UNKNOWN, EventVocabulary, Sequences, gap_buckets
from tlrec.training.splits import leave_last_out
from tlrec.training.validation import ValidationSplit

FAST = {"dim": 32, "heads": 2, "blocks": 1, "max_len": 8, "epochs": 60, "eval_every": 5, "patience": 4,
        "content_hidden": 16, "dropout": 0.1, "lr": 3e-3, "progress": False}
N_ITEMS = 30


def planted(n_users: int = 200, seed: int = 0) -> pl.DataFrame:
    """Sequences (of 5 to 16 events, so a position says nothing) where item ``a + 1`` always follows an
    even item ``a``; after an odd item comes a random even one. A bag of items cannot tell which pair
    came last; the order can."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        item = int(rng.integers(0, N_ITEMS))
        for t in range(int(rng.integers(5, 17))):
            rows.append((f"u{u}", f"i{item}", 1000 * t))
            item = item + 1 if item % 2 == 0 else int(rng.integers(0, N_ITEMS // 2)) * 2
    return pl.DataFrame(rows, schema=[Columns.USER, Columns.ITEM, Columns.TIMESTAMP], orient="row")


def indexed(frame: pl.DataFrame) -> InteractionData:
    return InteractionData.build(frame, IdMap([f"i{i}" for i in range(N_ITEMS)]))


def follows_rate(model, data: InteractionData, histories: list[list[int]]) -> float:
    """Share of histories ending in an even item ``a`` whose top-1 next item is ``a + 1`` (history kept)."""
    seqs = Sequences.from_lists([np.array(h) for h in histories])
    queries = model.sequence_vectors(seqs)
    top, _ = model.retrieve_rank(queries, 1)
    return float(np.mean([top[r, 0] == h[-1] + 1 for r, h in enumerate(histories)]))


@pytest.fixture(scope="module")
def planted_data() -> InteractionData:
    return indexed(planted())


@pytest.fixture(scope="module")
def fitted(planted_data) -> SASRecModel:
    return build_model("sasrec", FAST).fit(planted_data)  # type: ignore[return-value]


def test_learns_what_follows_what_where_a_bag_of_items_cannot(fitted, planted_data):
    rng = np.random.default_rng(1)
    # odd, even pairs then a final even item: the answer is decided by the last item alone
    histories = [[*(int(x) for x in rng.integers(0, N_ITEMS // 2, 4) * 2 + 1), int(rng.integers(0, N_ITEMS // 2)) * 2]
                 for _ in range(60)]
    assert follows_rate(fitted, planted_data, histories) >= 0.9
    # the same items in another order: the last item decides, so the answer moves with it
    reordered = [[h[-1], *h[:-1]] for h in histories]
    top, _ = fitted.retrieve_rank(fitted.sequence_vectors(Sequences.from_lists([np.array(h) for h in reordered])), 1)
    assert np.mean([top[r, 0] == histories[r][-1] + 1 for r in range(len(histories))]) < 0.5

    ease = build_model("ease", {"l2": 10.0}).fit(planted_data)
    bag = indexed(pl.DataFrame({Columns.USER: [f"h{r}" for r, h in enumerate(histories) for _ in h],
                                Columns.ITEM: [f"i{i}" for h in histories for i in h],
                                Columns.TIMESTAMP: [t for h in histories for t in range(len(h))]}))
    scores = ease.score_history(bag.matrix()[: len(histories)])
    assert np.mean([scores[r].argmax() == h[-1] + 1 for r, h in enumerate(histories)]) < 0.6


def test_a_blend_with_the_sequence_model_reads_sent_histories_in_order(fitted, planted_data):
    """A blend holding SASRec (as `--task next-item` may serve) answers a sent history by its order: the
    history goes in as a weighted matrix (weights by position, as serving builds it), and the blend hands
    the sequence model that order (an unweighted matrix would read the items by id)."""
    from tlrec.training.models.blend import BlendModel

    popularity = build_model("popularity").fit(planted_data)
    blend = BlendModel.of([fitted, popularity], [0.9, 0.1], None, planted_data)
    rng = np.random.default_rng(2)
    histories = []  # two distinct even items around three distinct odd ones: even, odd, odd, odd, even
    for _ in range(60):
        first, last = (int(x) for x in rng.choice(N_ITEMS // 2, 2, replace=False) * 2)
        histories.append([first, *(int(x) for x in rng.choice(N_ITEMS // 2, 3, replace=False) * 2 + 1), last])

    def top1(hs: list[list[int]]) -> np.ndarray:
        rows = np.repeat(np.arange(len(hs)), [len(h) for h in hs])
        weights = np.concatenate([blend.history_weights(len(h)) for h in hs])
        matrix = sp.csr_matrix((weights, (rows, np.concatenate(hs))), shape=(len(hs), planted_data.n_items))
        return blend.recommend_history(matrix, 1, exclude_history=False)[0][:, 0]

    assert np.mean(top1(histories) == [h[-1] + 1 for h in histories]) >= 0.8
    swapped = [[h[-1], *h[1:-1], h[0]] for h in histories]  # the other even item last: the answer follows it
    assert np.mean(top1(swapped) == [h[-1] + 1 for h in swapped]) >= 0.8
    assert fitted.ordered_history(0) is not None
    np.testing.assert_array_equal(blend.ordered_history(0), fitted.ordered_history(0))


def test_validation_holds_out_each_users_last_event(planted_data, fitted):
    split = ValidationSplit.of(planted_data, by="last")
    assert split.by == "last" and split.val.height == planted_data.n_users
    assert all(len(v) == 1 for v in split.relevant.values())
    assert fitted.validation_ndcg_ is not None and fitted.validation_ndcg_ > 0.4  # half the targets are decided
    assert fitted.epochs_ is not None and 1 <= fitted.epochs_ <= FAST["epochs"]


def test_new_items_are_placed_by_content():
    """Items never seen in training get vectors from content alone, close to their twins with the same content."""
    frame = planted(seed=3)
    data = indexed(frame.filter(pl.col(Columns.ITEM) != "i7"))  # i7 (follows i6) never seen
    rng = np.random.default_rng(0)
    content = rng.normal(size=(N_ITEMS, 8)).astype(np.float32)
    model = build_model("sasrec", FAST).fit(data, content)
    assert model.scores_new_items_from_content()
    items = model.item_vectors()
    assert np.isfinite(items).all() and np.abs(items[7]).sum() > 0


def test_save_load_answers_the_same(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = SASRecModel.load(tmp_path / "m")
    users = np.arange(10)
    a, _ = fitted.recommend(users, 5)
    b, _ = loaded.recommend(users, 5)
    assert np.array_equal(a, b)
    seqs = Sequences.from_lists([np.array([0, 2, 4]), np.array([6])])
    assert np.allclose(fitted.sequence_vectors(seqs), loaded.sequence_vectors(seqs), atol=1e-5)


def test_batch_equals_one_by_one(fitted):
    rows = [np.array([1, 2, 3, 4]), np.array([8]), np.array([5, 9, 11, 13, 15, 17, 19, 21, 23, 25, 0])]
    together = fitted.sequence_vectors(Sequences.from_lists(rows))
    alone = np.vstack([fitted.sequence_vectors(Sequences.from_lists([r])) for r in rows])
    assert np.allclose(together, alone, atol=1e-5)


def test_history_matrix_keeps_the_order_through_position_weights(fitted):
    """Serving builds weighted histories (``history_weights`` by position): the model reads the order back."""
    order = np.array([3, 10, 4])
    weights = fitted.history_weights(len(order))
    import scipy.sparse as sp

    matrix = sp.csr_matrix((weights, (np.zeros(3, int), order)), shape=(1, N_ITEMS))
    assert np.allclose(fitted.history_vectors(matrix), fitted.sequence_vectors(Sequences.from_lists([order])),
                       atol=1e-5)


# --------------------------------------------------------------------------- the sequence container
def test_sequences_windows_event_codes_and_gaps():
    frame = pl.DataFrame({Columns.USER: ["a", "a", "a", "b"], Columns.ITEM: ["i2", "i1", "i3", "i4"],
                          Columns.TIMESTAMP: [10, 5, 10 + 3600, 7], Columns.EVENT: ["view", "view", "buy", None]})
    data = indexed(frame)
    vocab = EventVocabulary.of(data)
    assert vocab.names[0] == "view" and set(vocab.names) == {"view", "buy", "interaction"}
    seqs = Sequences.of(data, vocab)
    a, b = data.users.to_internal(["a", "b"]).tolist()
    assert seqs.row(a).tolist() == [1, 2, 3]  # by time
    items, events, gaps = seqs.windows(4)
    assert items[a].tolist() == [PAD, 1, 2, 3] and items[b].tolist() == [PAD, PAD, PAD, 4]
    assert events[a].tolist() == [0, vocab.codes(["view"])[0], vocab.codes(["view"])[0], vocab.codes(["buy"])[0]]
    assert gaps[a, 1] == 0 and gaps[a, 2] == 1 + 2 and gaps[a, 3] == 1 + 11  # first; 5 s -> log2(6)=2; 3600 s -> 11
    cut, _, _ = seqs.windows(2, ends=np.array([2, 1]) if a == 0 else np.array([1, 2]))
    assert cut[a].tolist() == [1, 2]


def test_gap_buckets_unknown_times_and_first_events():
    ts = np.array([TIME_UNKNOWN, 100, 100, 50], np.int64)
    assert gap_buckets(ts, np.array([0, 2, 4])).tolist() == [0, 0, 0, 1]  # negative gap counts as 0 -> bucket 1


def test_training_windows_cover_every_target_once():
    rows, ends = training_windows(np.array([0, 1, 2, 5, 11]), 5)
    assert rows.tolist() == [2, 3, 4, 4] and ends.tolist() == [2, 5, 11, 6]


def test_leave_last_out_takes_the_latest_event():
    frame = pl.DataFrame({Columns.USER: ["a", "a", "a", "b"], Columns.ITEM: ["x", "y", "z", "w"],
                          Columns.TIMESTAMP: [3, 1, 2, 5]})
    train, test = leave_last_out(frame)
    assert test.rows() == [("a", "x", 3)] and train.height == 3


def test_a_fit_repeats_bit_for_bit_on_several_threads(planted_data):
    """Same seed, same data, two threads: the same weights (attention's dropout kernel alone differed run to
    run; ``tlrec train --ray-address`` promises the in-process result)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, second = (build_model("sasrec", {**FAST, "epochs": 4}).fit(planted_data) for _ in range(2))
    finally:
        torch.set_num_threads(threads)
    for name, weights in first.net.state_dict().items():
        assert torch.equal(weights, second.net.state_dict()[name]), name
