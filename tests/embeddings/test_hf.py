"""``hf:`` encoders for images and audio (embeddings.hf) on tiny random-weight models.

Every model is built from a small config, saved with ``save_pretrained``
together with its processor, and loaded back through the registry. Pooling
is checked against the same model run directly with transformers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tlrec.embeddings.hf import fingerprint, locate
from tlrec.embeddings.hf_audio import HFAudioEncoder
from tlrec.embeddings.hf_image import HFImageEncoder
from tlrec.embeddings.registry import allowed_names, get_encoder, modality_of

SR = 16_000
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
AUDIO_CONV = dict(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 4, 4), num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=2, vocab_size=12)


def _save(directory: Path, model, processor) -> Path:
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _n_params(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _norms_ok(out: np.ndarray) -> None:
    good = ~np.isnan(out).any(axis=1)
    np.testing.assert_allclose(np.linalg.norm(out[good], axis=1), 1.0, atol=1e-5)


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _photo(seed: int, h: int = 40, w: int = 52) -> np.ndarray:
    """Smooth random RGB uint8 image (so resizing does not alias it into noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return np.kron(small, np.ones((4, 4, 1), dtype=np.uint8))


def _tone(freq: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.4) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


# ---------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    import transformers as tf

    root = tmp_path_factory.mktemp("hf")
    square = dict(size={"height": 32, "width": 32})
    dirs = {
        "vit": _save(root / "vit", tf.ViTModel(tf.ViTConfig(**TINY, image_size=32, patch_size=8),
                                               add_pooling_layer=False), tf.ViTImageProcessor(**square)),
        "dinov2": _save(root / "dinov2", tf.Dinov2Model(tf.Dinov2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=32, patch_size=8)),
                        tf.BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})),
        "convnext": _save(root / "convnext", tf.ConvNextModel(tf.ConvNextConfig(
            hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32)),
            tf.ConvNextImageProcessor(size={"shortest_edge": 32})),
        "clip": _save(root / "clip", tf.CLIPModel(tf.CLIPConfig(
            text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
                             vocab_size=50, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                             pad_token_id=1),
            vision_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
                               image_size=32, patch_size=8), projection_dim=12)),
            tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})),
        "wav2vec2": _save(root / "wav2vec2", tf.Wav2Vec2Model(tf.Wav2Vec2Config(**TINY, **AUDIO_CONV)),
                          tf.Wav2Vec2FeatureExtractor(sampling_rate=SR)),
        # layer-norm feature encoder + attention mask: the batch is zero-padded
        "hubert": _save(root / "hubert", tf.HubertModel(tf.HubertConfig(
            **TINY, **AUDIO_CONV, feat_extract_norm="layer", do_stable_layer_norm=True)),
            tf.Wav2Vec2FeatureExtractor(sampling_rate=SR, return_attention_mask=True)),
        "ast": _save(root / "ast", tf.ASTModel(tf.ASTConfig(**TINY, patch_size=16, frequency_stride=10,
                                                             time_stride=10, max_length=100, num_mel_bins=32)),
                     tf.ASTFeatureExtractor(num_mel_bins=32, max_length=100)),
    }
    vision = tf.CLIPVisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
                                 image_size=32, patch_size=8, projection_dim=10)
    clip_processor = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    dirs["whisper"] = _save(root / "whisper", tf.WhisperModel(tf.WhisperConfig(
        d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=60, max_target_positions=32, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)), tf.WhisperFeatureExtractor())
    dirs["bert"] = root / "bert"
    tf.BertModel(tf.BertConfig(vocab_size=20, **TINY, max_position_embeddings=16)).save_pretrained(dirs["bert"])
    dirs["clip_vision"] = _save(root / "clip_vision", tf.CLIPVisionModel(vision), clip_processor)
    dirs["clip_vision_proj"] = _save(root / "clip_vision_proj", tf.CLIPVisionModelWithProjection(vision),
                                     clip_processor)
    return dirs


def _reference_model(directory: Path, cls_name: str = "AutoModel", **kwargs):
    import transformers as tf

    return getattr(tf, cls_name).from_pretrained(directory, **kwargs).eval()


def _reference_pixels(directory: Path, images):
    from PIL import Image
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(directory)
    return processor(images=[Image.fromarray(x) for x in images], return_tensors="pt")["pixel_values"]


# ---------------------------------------------------------------------------- images


@pytest.mark.parametrize("key, dim, pooling", [
    ("vit", 32, "cls"), ("dinov2", 32, "pooler"), ("convnext", 16, "pooler"), ("clip", 12, "image_features"),
    ("clip_vision", 16, "pooler"), ("clip_vision_proj", 10, "projected"),
])
def test_image_families_pool_like_the_model(models, key, dim, pooling):
    import torch

    name = f"hf:{models[key]}"
    assert modality_of(name) == "image"
    encoder = get_encoder(name)
    assert isinstance(encoder, HFImageEncoder) and encoder.pooling == pooling
    images = [_photo(1), _photo(2), _photo(1)]
    out = encoder.encode(images)
    assert out.shape == (3, dim) and out.dtype == np.float32 and encoder.card.dim == dim
    _norms_ok(out)
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)  # identical inputs -> identical vectors
    assert float(out[0] @ out[1]) < 0.999  # different images -> different vectors

    model = _reference_model(models[key], "CLIPVisionModelWithProjection" if key == "clip_vision_proj"
                             else "AutoModel", **({"add_pooling_layer": False} if key == "vit" else {}))
    pixels = _reference_pixels(models[key], images)
    with torch.inference_mode():
        if key == "clip":
            ref = model.get_image_features(pixel_values=pixels)
            ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
            used = (model.vision_model, model.visual_projection)
        elif key == "clip_vision_proj":
            ref, used = model(pixel_values=pixels).image_embeds, (model,)
        elif key == "vit":
            ref, used = model(pixel_values=pixels).last_hidden_state[:, 0], (model,)
        else:
            ref, used = model(pixel_values=pixels).pooler_output, (model,)
    np.testing.assert_allclose(out, _unit(ref.numpy()), atol=1e-5)

    card = encoder.card
    assert card.modality == "image" and card.name == name and card.framework == "pytorch"
    assert card.params == _n_params(*used)
    assert card.file_format == ".safetensors"
    assert card.size_mb == round((models[key] / "model.safetensors").stat().st_size / 1e6, 2)
    assert card.source == f"local dir {models[key]}"
    assert "32" in card.input_spec and "mean=" in card.input_spec and "std=" in card.input_spec
    assert f"pool={pooling}" in card.version


def test_image_inputs_paths_modes_exif_and_corrupt_file(models, tmp_path, caplog):
    from PIL import Image

    encoder = get_encoder(f"hf:{models['convnext']}")
    upright = Image.fromarray(_photo(3, 24, 40))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # EXIF orientation 6 turns it back upright
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated_path = tmp_path / "rotated.png"
    stored.save(rotated_path, exif=exif)
    gray = Image.fromarray(_photo(4)).convert("L")
    gray_path = tmp_path / "gray.png"
    gray.save(gray_path)
    rgba = Image.fromarray(_photo(5)).convert("RGBA")
    palette = Image.fromarray(_photo(6)).convert("P")
    cmyk = Image.fromarray(_photo(7)).convert("CMYK")
    broken = tmp_path / "broken.jpg"
    good_jpeg = tmp_path / "good.jpg"
    Image.fromarray(_photo(8)).save(good_jpeg, quality=95)
    broken.write_bytes(good_jpeg.read_bytes()[:200])  # truncated
    inputs = [rotated_path, upright, str(gray_path), gray.convert("RGB"), rgba, palette, cmyk, broken,
              np.asarray(Image.open(good_jpeg))]
    with caplog.at_level("WARNING", logger="tlrec.embeddings.hf"):
        out = encoder.encode(inputs, batch_size=4)
    assert out.shape == (9, 16)
    assert np.isnan(out[7]).all() and "broken.jpg" in caplog.text
    assert np.isfinite(np.delete(out, 7, axis=0)).all()
    _norms_ok(out)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # EXIF orientation applied
    np.testing.assert_allclose(out[2], out[3], atol=1e-6)  # grayscale == its RGB copy


def test_image_batch_order_matches_one_by_one(models):
    encoder = get_encoder(f"hf:{models['vit']}")
    images = [_photo(s, 24 + 4 * s, 60 - 4 * s) for s in range(7)]
    batched = encoder.encode(images, batch_size=3)
    single = np.stack([encoder.encode([x])[0] for x in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert encoder.encode([]).shape == (0, 32)


# ---------------------------------------------------------------------------- audio


def _reference_frame_mean(directory: Path, windows: list[np.ndarray]) -> np.ndarray:
    """Frame-weighted mean of last_hidden_state over windows run one by one, L2-normalised."""
    import torch
    from transformers import AutoFeatureExtractor

    extractor = AutoFeatureExtractor.from_pretrained(directory)
    model = _reference_model(directory)
    total, frames = 0.0, 0
    with torch.inference_mode():
        for w in windows:
            x = extractor(w, sampling_rate=SR, return_tensors="pt")["input_values"]
            hidden = model(input_values=x).last_hidden_state[0]
            total, frames = total + hidden.sum(dim=0).numpy().astype(np.float64), frames + hidden.shape[0]
    return _unit((total / frames)[None])[0]


@pytest.mark.parametrize("key", ["wav2vec2", "hubert"])
def test_wav2vec2_family_mean_over_valid_frames(models, key, wav_writer, tmp_path, caplog):
    name = f"hf:{models[key]}"
    assert modality_of(name) == "audio"
    encoder = get_encoder(name)
    assert isinstance(encoder, HFAudioEncoder) and encoder.pooling == "frame-mean"
    tone = _tone(440)
    stereo_44k = np.stack([_tone(440, sr=44_100), _tone(440, sr=44_100)], axis=1)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    inputs = [(tone, SR), wav_writer(tmp_path / "stereo44k.wav", stereo_44k, 44_100), corrupt,
              (np.zeros(SR, np.float32), SR), (_tone(220, 0.7), SR), (tone, SR), (_tone(880, 1.3), SR)]
    with caplog.at_level("WARNING", logger="tlrec.embeddings.hf"):
        out = encoder.encode(inputs, batch_size=3)
    assert out.shape == (7, 32) and out.dtype == np.float32 and encoder.card.dim == 32
    assert np.isnan(out[2]).all() and np.isnan(out[3]).all()  # corrupt and silent
    assert "corrupt.wav" in caplog.text and "silent" in caplog.text
    good = [0, 1, 4, 5, 6]
    assert np.isfinite(out[good]).all()
    _norms_ok(out)
    np.testing.assert_allclose(out[0], out[5], atol=1e-6)
    assert float(out[0] @ out[1]) > 0.99  # the same tone as 44.1 kHz stereo 16-bit WAV
    assert float(out[0] @ out[4]) < 0.9999
    np.testing.assert_allclose(out[0], _reference_frame_mean(models[key], [tone]), atol=1e-5)

    single = np.stack([encoder.encode([x])[0] for x in inputs])
    np.testing.assert_allclose(out, single, atol=1e-5, equal_nan=True)  # batching (and padding) is exact

    card = encoder.card
    assert card.params == _n_params(_reference_model(models[key]))
    assert card.file_format == ".safetensors" and card.modality == "audio"
    assert "16000 Hz" in card.input_spec and "sr=16000" in card.version


def test_long_audio_is_windowed_and_frame_weighted(models):
    encoder = HFAudioEncoder(models["wav2vec2"], window_seconds=1.0)
    clip = np.concatenate([_tone(300, 1.0), _tone(600, 1.5)])  # 2.5 s -> 3 windows of ~0.83 s
    out = encoder.encode([(clip, SR)])
    expected = _reference_frame_mean(models["wav2vec2"], np.array_split(clip, 3))
    np.testing.assert_allclose(out[0], expected, atol=1e-5)


def test_ast_uses_pooler_output(models):
    import torch
    from transformers import AutoFeatureExtractor

    name = f"hf:{models['ast']}"
    assert modality_of(name) == "audio"
    encoder = get_encoder(name)
    assert encoder.pooling == "pooler" and encoder.window == SR  # max_length 100 frames of 10 ms
    a, b = _tone(440, 0.8), _tone(1000, 0.8)
    out = encoder.encode([(a, SR), (b, SR), (np.concatenate([a, a]), SR), (np.zeros(8000, np.float32), SR)])
    assert out.shape == (4, 32)
    assert np.isnan(out[3]).all() and np.isfinite(out[:3]).all()
    _norms_ok(out)
    extractor = AutoFeatureExtractor.from_pretrained(models["ast"])
    model = _reference_model(models["ast"])
    with torch.inference_mode():
        ref = model(**extractor([a, b], sampling_rate=SR, return_tensors="pt")).pooler_output
    np.testing.assert_allclose(out[:2], _unit(ref.numpy()), atol=1e-5)
    np.testing.assert_allclose(out[2], out[0], atol=1e-5)  # two windows of the same sound
    assert encoder.card.params == _n_params(model) and "32 mel bins" in encoder.card.input_spec


def test_whisper_encoder_mean_over_real_frames(models):
    import torch
    from transformers import AutoFeatureExtractor

    name = f"hf:{models['whisper']}"
    assert modality_of(name) == "audio"
    encoder = get_encoder(name)
    tone = _tone(440, 1.0)
    out = encoder.encode([(tone, SR), (tone, 8_000)])  # 8 kHz input is resampled to the extractor's 16 kHz
    assert out.shape == (2, 16) and np.isfinite(out).all()
    _norms_ok(out)
    model = _reference_model(models["whisper"])
    features = AutoFeatureExtractor.from_pretrained(models["whisper"])(tone, sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        hidden = model.encoder(features["input_features"]).last_hidden_state[0]  # [1500, 16] for 30 s
    np.testing.assert_allclose(out[0], _unit(hidden[:50].mean(dim=0)[None].numpy())[0], atol=1e-5)  # 1 s of 30
    assert encoder.card.params == _n_params(model.encoder)  # the decoder is not used


# ---------------------------------------------------------------------------- registry, cards, errors


def test_forced_modality_and_allowed_names(models):
    assert modality_of(f"hf-audio:{models['ast']}") == "audio"
    assert modality_of("hf-text:/anything") == "text"  # forced: nothing is read
    assert modality_of(f"hf:{models['bert']}") == "text"
    forced = get_encoder(f"hf-image:{models['vit']}")
    assert isinstance(forced, HFImageEncoder) and forced.card.name == f"hf-image:{models['vit']}"
    assert "hf-image:" in allowed_names() and "hf-audio:" in allowed_names()
    with pytest.raises(ValueError, match="hf-image"):
        get_encoder("hf-image:  ")


def test_version_changes_when_weights_change(tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(**TINY, image_size=32, patch_size=8)
    _save(tmp_path, ViTModel(config), ViTImageProcessor(size={"height": 32, "width": 32}))
    before = fingerprint(locate(str(tmp_path)))
    assert fingerprint(locate(str(tmp_path))) == before
    ViTModel(config).save_pretrained(tmp_path)  # same config and file size, new weights
    assert fingerprint(locate(str(tmp_path))) != before


def test_unknown_hub_id_is_a_clear_one_line_error():
    for name in ("hf:no-such-org/no-such-model-xyz", "hf-image:no-such-org/no-such-model-xyz"):
        with pytest.raises(OSError) as err:
            get_encoder(name)
        message = str(err.value)
        assert "no-such-org/no-such-model-xyz" in message and "\n" not in message
    with pytest.raises(OSError, match="no-such-org/no-such-model-xyz"):
        modality_of("hf:no-such-org/no-such-model-xyz")


def test_hub_id_from_the_local_cache(models, tmp_path):
    """A hub id resolves through the Hugging Face cache offline; the card describes the cached snapshot."""
    import json
    import os
    import subprocess
    import sys

    repo = tmp_path / "hub" / "models--some-org--tiny-vit"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    for path in models["vit"].iterdir():
        blob = repo / "blobs" / f"blob-{path.name}"
        blob.write_bytes(path.read_bytes())
        (repo / "snapshots" / "abc123" / path.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    code = ("import json, numpy as np; from tlrec.embeddings.registry import get_encoder, modality_of; "
            "e = get_encoder('hf:some-org/tiny-vit'); "
            "print(json.dumps([modality_of('hf:some-org/tiny-vit'), e.card.to_dict(), "
            "e.encode([np.zeros((8, 8, 3), np.uint8)]).shape[1]]))")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    modality, card, dim = json.loads(done.stdout.strip().splitlines()[-1])
    assert modality == "image" and dim == 32 and card["dim"] == 32
    assert card["source"].startswith("Hugging Face hub: some-org/tiny-vit (cached snapshot ")
    assert card["size_mb"] == round((models["vit"] / "model.safetensors").stat().st_size / 1e6, 2)
    assert card["file_format"] == ".safetensors"
