"""fuse(): per-modality blocks -> one unit vector per item (hand-worked numbers)."""

from __future__ import annotations

import numpy as np
import pytest

from tlrec.embeddings.fusion import fuse, fused_dim

NAN = np.nan
S = np.sqrt(0.5)


def blocks():
    text = np.array([[3, 4], [NAN, NAN], [1, 0], [NAN, NAN]], dtype=np.float32)
    image = np.array([[0, 0, 2], [0, 5, 0], [NAN, NAN, NAN], [0, 0, 0]], dtype=np.float32)
    return {"text": text, "image": image}


def test_hand_worked_equal_weights():
    out = fuse(blocks())
    expected = np.array([
        [0.6 * S, 0.8 * S, 0, 0, S],   # both present: each block carries half the squared norm
        [0, 0, 0, 1, 0],               # text missing -> zeros, image alone
        [1, 0, 0, 0, 0],               # image missing
        [0, 0, 0, 0, 0],               # nothing present (NaN text, all-zero image) -> zero row
    ], dtype=np.float32)
    assert out.shape == (4, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_hand_worked_weights():
    out = fuse(blocks(), weights={"text": 3.0, "image": 1.0})
    # row 0: text scaled by sqrt(3/4), image by sqrt(1/4)
    np.testing.assert_allclose(out[0], [0.6 * np.sqrt(0.75), 0.8 * np.sqrt(0.75), 0, 0, 0.5], atol=1e-6)
    np.testing.assert_allclose(out[1], [0, 0, 0, 1, 0], atol=1e-6)  # weights renormalise over present blocks


def test_dot_product_is_mean_of_block_cosines():
    rng = np.random.default_rng(0)
    a = {m: rng.standard_normal((2, d)).astype(np.float32) for m, d in [("text", 8), ("image", 5), ("audio", 3)]}
    out = fuse(a)
    cosines = [(b[0] / np.linalg.norm(b[0])) @ (b[1] / np.linalg.norm(b[1])) for b in a.values()]
    assert out[0] @ out[1] == pytest.approx(np.mean(cosines), abs=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_order_and_dims():
    out = fuse({"image": np.ones((1, 3)), "text": np.ones((1, 2))})
    # blocks keep dict order (image first); each unit block scaled by sqrt(1/2)
    np.testing.assert_allclose(out[0], [S / np.sqrt(3)] * 3 + [S / np.sqrt(2)] * 2, atol=1e-6)
    assert fused_dim({"text": 384, "image": 1280, "audio": 256}) == 1920
    assert fused_dim([2, 3]) == 5


@pytest.mark.parametrize("bad_blocks, weights", [
    ({}, None),
    ({"text": np.ones((2, 3)), "image": np.ones((3, 3))}, None),
    ({"text": np.ones(3)}, None),
    ({"text": np.ones((2, 3))}, {"audio": 1.0}),
    ({"text": np.ones((2, 3))}, {"text": -1.0}),
])
def test_invalid_input(bad_blocks, weights):
    with pytest.raises(ValueError):
        fuse(bad_blocks, weights)
