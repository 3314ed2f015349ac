"""ImageEncoder: EfficientNet-Lite0 with real ImageNet weights, offline."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image


def test_cat_photo_gets_a_cat_class(image_encoder, chelsea):
    logits = image_encoder.classify([np.asarray(chelsea)])
    assert logits.shape == (1, 1000) and logits.dtype == np.float32
    assert 281 <= int(logits[0].argmax()) <= 285  # tabby / tiger / Persian / Siamese / Egyptian cat
    top5 = np.argsort(-logits[0])[:5]
    assert sum(281 <= int(c) <= 287 for c in top5) >= 3


def test_features_shape_and_norm(image_encoder, chelsea):
    from skimage import data

    out = image_encoder.encode([chelsea, data.coffee(), np.asarray(chelsea)])
    assert out.shape == (3, 1280) and out.dtype == np.float32
    assert image_encoder.card.dim == 1280
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)  # PIL image == uint8 array
    assert out[0] @ out[1] < 0.8  # a cat is not a cup of coffee


def test_modes_and_exif_orientation(image_encoder, chelsea, tmp_path):
    paths = {}

    def save(name, img, **kw):
        paths[name] = tmp_path / name
        img.save(paths[name], **kw)

    save("rgb.png", chelsea)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": stored pixels are rotated 90 CCW
    rotated = chelsea.transpose(Image.Transpose.ROTATE_90)
    save("exif.png", rotated, exif=exif)
    save("exif.jpg", rotated, exif=exif, quality=95)
    save("rotated_no_exif.png", rotated)
    save("rgba.png", chelsea.convert("RGBA"))
    save("cmyk.tif", chelsea.convert("CMYK"))
    save("cmyk.jpg", chelsea.convert("CMYK"), quality=95)
    save("palette.png", chelsea.convert("P", palette=Image.Palette.ADAPTIVE, colors=256))
    save("gray.png", chelsea.convert("L"))
    save("gray16.png", Image.fromarray(np.asarray(chelsea.convert("L")).astype(np.uint16) * 257))
    names = list(paths)
    out = image_encoder.encode([str(paths[n]) for n in names], batch_size=4)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    cos = dict(zip(names, out @ out[0]))
    for lossless in ("exif.png", "rgba.png", "cmyk.tif"):
        assert cos[lossless] > 0.99, (lossless, cos[lossless])
    for close in ("exif.jpg", "cmyk.jpg", "palette.png"):
        assert cos[close] > 0.9, (close, cos[close])
    assert cos["gray.png"] > 0.8 and abs(cos["gray16.png"] - cos["gray.png"]) < 1e-3
    assert cos["rotated_no_exif.png"] < cos["exif.png"] - 0.05  # EXIF orientation was applied


def test_transparent_pixels_are_composited_on_white(image_encoder, chelsea):
    rgba = np.asarray(chelsea.convert("RGBA")).copy()
    rgba[..., :3] = 0
    rgba[..., 3] = 0  # fully transparent black
    white = np.full_like(rgba[..., :3], 255)
    out = image_encoder.encode([rgba, white])
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)


def test_bad_files_give_nan_rows_without_stopping(image_encoder, chelsea, tmp_path, caplog):
    good = tmp_path / "good.jpg"
    chelsea.save(good, quality=90)
    raw = good.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(raw[: len(raw) // 2])
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a picture")
    missing = tmp_path / "missing.png"
    with caplog.at_level(logging.WARNING, logger="tlrec.embeddings.image"):
        out = image_encoder.encode([good, truncated, not_image, missing, good], batch_size=2)
    assert out.shape == (5, 1280)
    assert np.isnan(out[1:4]).all()
    assert np.isfinite(out[[0, 4]]).all()
    np.testing.assert_allclose(out[0], out[4], atol=1e-6)
    for bad in (truncated, not_image, missing):
        assert any(str(bad) in r.getMessage() for r in caplog.records), bad


@pytest.mark.parametrize("bad", [np.zeros((10, 10, 2), np.uint8), np.zeros((4, 4, 3), np.int64), 42])
def test_invalid_inputs_are_nan_rows(image_encoder, bad):
    out = image_encoder.encode([bad])
    assert out.shape == (1, 1280) and np.isnan(out).all()


def test_card(image_encoder):
    card = image_encoder.card
    assert card.name == "efficientnet-lite0" and card.modality == "image"
    assert card.file_format == ".pth" and 4_000_000 < card.params < 5_500_000
    assert "224" in card.input_spec
