"""API load benchmark: one `tlrec serve` on loopback, concurrent clients, a constant endpoint as the yardstick.

    .venv/bin/python bench/api_load.py [--items 10000] [--users 3000] [--requests 2000] [--out bench/results]

1. Builds a synthetic world: a 10,000-item catalog, users with Zipf-popular histories,
   random unit content vectors (64-d; the encoders are not what this measures) and a
   quick NCF or SASRec (``--model``; default config, 3 epochs), published as an artifact with its FAISS index.
2. Starts one server (`python -m services.cli serve`, API key auth on, access log off).
3. For concurrency 1, 4 and 16 drives, with ``httpx.AsyncClient`` (keep-alive),
   ``GET /v1/ping`` (a constant, through the same auth and middleware) and
   ``GET /v1/users/{id}/recommendations?k=10`` for random known users, in alternating
   rounds (so both see the same load on a shared machine) after a warm-up, and records
   throughput and p50/p99 latency.
4. Prints a table and writes ``api_load.md`` and ``api_load.json``.

Client and server share the machine's cores, so absolute numbers are a floor; the
ratio recommendations/ping is the figure that carries over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

logger = logging.getLogger("bench.api_load")
API_KEY = "bench-key"
CONCURRENCY = (1, 4, 16)


def build_world(out: Path, n_items: int, n_users: int, per_user: int = 20, dim: int = 64,
                epochs: int = 3, seed: int = 0, model_name: str = "ncf") -> Path:
    """Publish an NCF (or ``model_name``) artifact for a synthetic catalog under ``out/artifacts``; returns the root."""
    import polars as pl

    from tlrec.training.data import load_catalog, load_interactions
    from tlrec.training.id_map import IdMap
    from tlrec.training.interaction_data import InteractionData
    from tlrec.training.model_artifact import ModelArtifact
    from tlrec.training.models import NCFModel, build_model

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    item_ids = [f"i{i:06d}" for i in range(n_items)]
    pl.DataFrame({"item_id": item_ids, "title": [f"item {i}" for i in range(n_items)]}).write_parquet(
        out / "catalog.parquet")
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    pop = rng.permutation(pop / pop.sum())
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.choice(n_items, size=len(users), p=pop)
    ts = 1_700_000_000 + rng.integers(0, 90 * 86400, size=len(users))
    pl.DataFrame({"user_id": [f"u{u:05d}" for u in users], "item_id": [item_ids[i] for i in items],
                  "timestamp": ts, "event": ["view"] * len(users)}).write_parquet(out / "interactions.parquet")
    catalog = load_catalog(out / "catalog.parquet")
    interactions = load_interactions(out / "interactions.parquet", catalog=catalog)
    content = rng.normal(size=(n_items, dim)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    model = (NCFModel(NCFModel.config_class(epochs=epochs, val_fraction=0.0, progress=False, seed=seed))
             if model_name == "ncf" else
             build_model(model_name, {"epochs": epochs, "validation": "none", "progress": False, "seed": seed}))
    data = InteractionData.build(interactions, IdMap(item_ids))
    start = time.perf_counter()
    model.fit(data, content)
    root = out / "artifacts"
    artifact = ModelArtifact.build(model, data, time.perf_counter() - start)  # model, id maps, index ...
    artifact.publish(root, manifest={"bench": "api_load synthetic world"})
    logger.info("bench world: %d items, %d users, %s fitted in %.1fs", n_items, n_users, model_name,
                artifact.training["fit_seconds"])
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(artifacts: Path, events: Path, port: int, threads: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "TLREC_API_KEYS": API_KEY, "TLREC_EVENTS_DIR": str(events), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tlrec.services.cli", "serve", "--artifacts", str(artifacts), "--port", str(port),
           "--no-access-log"]
    if threads:
        cmd += ["--threads", str(threads)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextmanager
def serving(artifacts: Path, events: Path, threads: int | None = None, ready_timeout: float = 120.0) -> Iterator[str]:
    """A ``tlrec serve`` of ``artifacts`` on a free loopback port, ready: yields its base URL, stops it after."""
    port = free_port()
    proc = start_server(artifacts, events, port, threads)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, ready_timeout)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready in {timeout:.0f} s")


async def drive(base: str, paths: list[str], concurrency: int) -> tuple[float, np.ndarray, int]:
    """Send every path once with ``concurrency`` keep-alive workers; (seconds, latencies in s, non-200s)."""
    import httpx

    latencies = np.zeros(len(paths))
    errors = 0
    nxt = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": API_KEY}, limits=limits,
                                 timeout=30) as client:
        async def worker() -> None:
            nonlocal nxt, errors
            while nxt < len(paths):
                i = nxt
                nxt += 1
                t = time.perf_counter()
                r = await client.get(paths[i])
                latencies[i] = time.perf_counter() - t
                errors += r.status_code != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies, errors


def measure(base: str, users: list[str], n_requests: int, rounds: int = 5, seed: int = 0,
            route: str = "recommendations") -> list[dict]:
    """Per concurrency: ``rounds`` alternating cells of ping then recommendations (``n_requests`` each in
    total), so both endpoints see the same machine load; throughput = requests / summed seconds."""
    rng = np.random.default_rng(seed)

    def paths(name: str, n: int) -> list[str]:
        if name == "ping":
            return ["/v1/ping"] * n
        return [f"/v1/users/{users[i]}/{route}?k=10" for i in rng.integers(0, len(users), n)]

    rows = []
    per_round = max(1, n_requests // rounds)
    for c in CONCURRENCY:
        acc = {name: {"seconds": 0.0, "lat": [], "errors": 0, "rps": []} for name in ("ping", "recommendations")}
        for name in acc:
            asyncio.run(drive(base, paths(name, max(50, 4 * c)), c))  # warm-up (connections, caches)
        for _ in range(rounds):
            for name, a in acc.items():
                seconds, lat, errors = asyncio.run(drive(base, paths(name, per_round), c))
                a["seconds"] += seconds
                a["lat"].append(lat)
                a["errors"] += errors
                a["rps"].append(per_round / seconds)
        for name, a in acc.items():
            lat = np.concatenate(a["lat"])
            rows.append({
                "endpoint": name, "concurrency": c, "requests": len(lat), "errors": int(a["errors"]),
                "seconds": round(a["seconds"], 3), "throughput_rps": round(len(lat) / a["seconds"], 1),
                "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 2),
                "p99_ms": round(float(np.percentile(lat, 99)) * 1000, 2),
                "round_rps": [round(x, 1) for x in a["rps"]],
            })
            logger.info("%s c=%d: %.0f req/s, p50 %.2f ms, p99 %.2f ms", name, c, rows[-1]["throughput_rps"],
                        rows[-1]["p50_ms"], rows[-1]["p99_ms"])
    return rows


def ratios(rows: list[dict]) -> dict[int, dict[str, float]]:
    """recommendations / ping throughput per concurrency: of the totals, and the median of the rounds."""
    by = {(r["endpoint"], r["concurrency"]): r for r in rows}
    out = {}
    for c in CONCURRENCY:
        rec, ping = by[("recommendations", c)], by[("ping", c)]
        per_round = [a / b for a, b in zip(rec["round_rps"], ping["round_rps"])]
        out[c] = {"total": round(rec["throughput_rps"] / ping["throughput_rps"], 3),
                  "median_round": round(float(np.median(per_round)), 3)}
    return out


def to_markdown(result: dict) -> str:
    route = result.get("route", "recommendations")  # the rows call the measured route "recommendations"
    lines = [
        f"# API load: {route} vs a constant endpoint (one server, loopback)",
        "",
        f"{result['n_items']:,} items, {result['n_users']:,} users, route `/v1/users/{{id}}/{route}`, "
        f"{result.get('model', 'ncf')} (default config, 3 epochs, random 64-d content "
        f"vectors; exact index of dim {result['index_dim']}), "
        f"k=10, {result['requests']} requests per endpoint and concurrency (in {result['rounds']} alternating rounds, "
        f"after a warm-up); server threads {result['server_threads']}; "
        f"{result['machine']}.",
        "",
        "| endpoint | concurrency | req/s | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        endpoint = route if r["endpoint"] == "recommendations" else r["endpoint"]
        lines.append(f"| {endpoint} | {r['concurrency']} | {r['throughput_rps']:.0f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['errors']} |")
    lines += ["", f"Throughput ratio {route} / ping (target >= 0.5), of the totals and the median of the "
                  f"{result['rounds']} alternating rounds:", ""]
    lines += [f"- concurrency {c}: **{v['total']:.2f}** (rounds: {v['median_round']:.2f})"
              for c, v in result["ratios"].items()]
    lines += ["", "Client (httpx, asyncio) and server share the same cores, so absolute figures are a floor.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=3_000)
    parser.add_argument("--requests", type=int, default=2_000, help="Measured requests per endpoint and concurrency.")
    parser.add_argument("--rounds", type=int, default=5, help="Alternating ping/recommendations rounds.")
    parser.add_argument("--threads", type=int, default=None, help="Server model threads (`tlrec serve --threads`).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the synthetic world (default: temp).")
    parser.add_argument("--model", choices=("ncf", "sasrec"), default="ncf",
                        help="The served model (sasrec: the next-item model).")
    parser.add_argument("--route", choices=("recommendations", "next"), default="recommendations",
                        help="The measured route: /v1/users/{id}/recommendations or /v1/users/{id}/next.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="api_load-") as tmp:
        work = args.work or Path(tmp)
        artifacts = build_world(work, args.items, args.users, model_name=args.model)
        from tlrec.serving.served_model import ServedModel

        index_dim = ServedModel.load(artifacts).index.dim
        users = [f"u{u:05d}" for u in range(args.users)]
        with serving(artifacts, work / "events", args.threads) as base:
            rows = measure(base, users, args.requests, args.rounds, route=args.route)
    from tlrec.serving.settings import available_cores, model_threads_default

    result = {
        "n_items": args.items, "n_users": args.users, "requests": args.requests, "rounds": args.rounds, "k": 10,
        "model": args.model, "route": args.route,
        "index_dim": index_dim,
        "server_threads": args.threads or model_threads_default(),
        "machine": f"{available_cores()} cores, Python {platform.python_version()}, load avg "
                   f"{load_start:.2f} at the start and {os.getloadavg()[0]:.2f} at the end (a shared machine)",
        "rows": rows, "ratios": ratios(rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "api_load" if (args.model, args.route) == ("ncf", "recommendations") else f"api_load_{args.route}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = to_markdown(result)
    (args.out / f"{name}.md").write_text(md)
    print(md)  # the benchmark's output is its table
    return result


if __name__ == "__main__":
    main()
