"""RecTools ``SASRecModel`` runner, executed INSIDE the RecTools virtual environment.

Not importable from the project's ``.venv`` (RecTools 0.19 needs numpy < 2): the
bench side is ``bench/rectools_bridge.py``, which creates that venv and calls
this script through a subprocess. It imports nothing from ``tlrec``.

    python rectools_sasrec.py --train TRAIN.parquet --users USERS.parquet --k 10 \\
        --out RECS.parquet [--settings '{"epochs": 100}']

Inputs
    TRAIN.parquet  columns ``user_id`` (str), ``item_id`` (str), ``timestamp``
                   (int64, Unix seconds), optionally ``value`` (float, ignored:
                   every interaction gets weight 1). Each user's sequence is the
                   rows ordered by timestamp with a *stable* sort, so rows with
                   equal timestamps keep their file order: the caller decides ties.
    USERS.parquet  column ``user_id`` (str): who gets recommendations. Users
                   absent from TRAIN get none (RecTools warns, no error).

Outputs
    RECS.parquet       ``user_id`` (str), ``item_id`` (str), ``rank`` (int, 1-based),
                       at most K rows per user, items the user has in TRAIN excluded
                       (``filter_viewed=True``).
    RECS.parquet.json  ``fit_seconds``, ``recommend_seconds``, ``settings`` (every
                       SASRecModel parameter as RecTools reports it, plus the runner's
                       own keys), ``rectools_version``, ``torch_version`` and counts.

Settings (JSON object on the command line) override ``DEFAULT_SETTINGS`` key by key;
an unknown key is an error. Model keys are SASRecModel's scalar keyword arguments;
runner keys are ``seed``, ``accelerator`` (Lightning trainer, default "cpu") and
``torch_num_threads`` (None keeps torch's default).

Limit (RecTools behaviour): the model's item vocabulary is built from the training
sequences after they are cut to their last ``session_max_len + 1`` events, so an item
that appears only earlier in long histories can never be recommended. The sidecar
reports ``n_items_train`` and ``n_items_model`` to show how many such items there are.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger("rectools_sasrec")

# RecTools 0.19 SASRecModel defaults (its docstring), with these choices of ours:
# - epochs: RecTools' default is 3, far too few for a ~600-user dataset (5 batches
#   per epoch at batch_size 128); its public benchmark (blondered/bert4rec_repro,
#   linked from the SASRecModel docstring) trains up to 200 epochs with early
#   stopping on a validation split. 50 is the peak of a validation curve on
#   ml-latest-small (610 users, 100k ratings; target = each user's second-to-last
#   rating, fit on the events before it, these defaults otherwise), one fit read every
#   10 epochs: NDCG@10 0.016 (epoch 3), 0.021 (10), 0.029 (30), 0.044 (40),
#   0.045 (50), 0.044 (60), 0.035 (70). Popularity on the same split: 0.017.
#   Leave-last-out test with 50 epochs: HR@10 0.074, NDCG@10 0.0385 (popularity 0.019).
#   ~40-55 s per epoch on 2 shared cores with n_factors 256 (softmax over ~6k items).
# - deterministic + fixed seed (docstring: "Use seed_everything together with this").
# - item_net_block_types: ids only (the default's CatFeaturesItemNet is ignored with a
#   warning when the dataset has no item features, which is always the case here).
# - recommend_torch_device "cpu" and a CPU Lightning trainer: the bench compares
#   CPU fit times with the project's models.
DEFAULT_SETTINGS: dict[str, Any] = {
    "n_blocks": 2,
    "n_heads": 4,
    "n_factors": 256,
    "dropout_rate": 0.2,
    "session_max_len": 100,
    "train_min_user_interactions": 2,
    "loss": "softmax",
    "n_negatives": 1,
    "gbce_t": 0.2,
    "lr": 0.001,
    "batch_size": 128,
    "epochs": 50,
    "deterministic": True,
    "verbose": 0,
    "dataloader_num_workers": 0,
    "use_pos_emb": True,
    "use_key_padding_mask": False,
    "use_causal_attn": True,
    "recommend_batch_size": 256,
    "recommend_torch_device": "cpu",
    "recommend_use_torch_ranking": True,
    "recommend_n_threads": 0,
    # runner keys (not SASRecModel arguments)
    "seed": 42,
    "accelerator": "cpu",
    "torch_num_threads": None,
}
RUNNER_KEYS = ("seed", "accelerator", "torch_num_threads")


def make_trainer(
    epochs: int, deterministic: bool, verbose: int, accelerator: str
) -> Any:
    """Lightning trainer like RecTools' default one (exact epochs, no checkpoints) on ``accelerator``."""
    from pytorch_lightning import Trainer

    return Trainer(
        max_epochs=epochs,
        min_epochs=epochs,
        deterministic=deterministic,
        enable_progress_bar=verbose > 0,
        enable_model_summary=verbose > 0,
        logger=verbose > 0,
        enable_checkpointing=False,
        accelerator=accelerator,
        devices=1,
    )


def merge_settings(overrides: dict[str, Any]) -> dict[str, Any]:
    """DEFAULT_SETTINGS updated with ``overrides``; unknown keys raise ValueError."""
    unknown = sorted(set(overrides) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(
            f"unknown settings {unknown}; known: {sorted(DEFAULT_SETTINGS)}"
        )
    settings = dict(DEFAULT_SETTINGS)
    settings.update(overrides)
    return settings


def run(
    train_path: Path,
    users_path: Path,
    k: int,
    out_path: Path,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """Fit SASRec on TRAIN, recommend top-``k`` for USERS, write RECS and its JSON sidecar; return the sidecar."""
    import numpy as np
    import pandas as pd
    import pytorch_lightning
    import rectools
    import torch
    from rectools import Columns
    from rectools.dataset import Dataset
    from rectools.models import SASRecModel
    from rectools.models.nn.item_net import IdEmbeddingsItemNet

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    settings = merge_settings(overrides)
    if settings["torch_num_threads"] is not None:
        torch.set_num_threads(int(settings["torch_num_threads"]))

    train = pd.read_parquet(train_path, columns=None)
    missing = {"user_id", "item_id", "timestamp"} - set(train.columns)
    if missing:
        raise ValueError(f"{train_path} lacks columns {sorted(missing)}")
    users = (
        pd.read_parquet(users_path, columns=["user_id"])["user_id"].astype(str).tolist()
    )
    interactions = pd.DataFrame(
        {
            Columns.User: train["user_id"].astype(str).to_numpy(),
            Columns.Item: train["item_id"].astype(str).to_numpy(),
            Columns.Weight: np.ones(len(train), dtype=np.float32),
            Columns.Datetime: pd.to_datetime(
                train["timestamp"].astype("int64"), unit="s"
            ),
        }
    )
    logger.info(
        "train: %d interactions, %d users, %d items; %d target users; k=%d",
        len(interactions),
        interactions[Columns.User].nunique(),
        interactions[Columns.Item].nunique(),
        len(users),
        k,
    )
    dataset = Dataset.construct(interactions)

    model_kwargs = {
        key: value for key, value in settings.items() if key not in RUNNER_KEYS
    }
    model = SASRecModel(
        **model_kwargs,
        item_net_block_types=(IdEmbeddingsItemNet,),
        get_trainer_func=make_trainer,
        get_trainer_func_kwargs={
            "epochs": settings["epochs"],
            "deterministic": settings["deterministic"],
            "verbose": settings["verbose"],
            "accelerator": settings["accelerator"],
        },
    )
    pytorch_lightning.seed_everything(
        int(settings["seed"]), workers=True, verbose=False
    )
    logger.info("fitting SASRec: %s", json.dumps(settings, sort_keys=True))
    start = time.perf_counter()
    model.fit(dataset)
    fit_seconds = time.perf_counter() - start
    logger.info("fit took %.1f s", fit_seconds)

    start = time.perf_counter()
    recs = model.recommend(
        users=users,
        dataset=dataset,
        k=k,
        filter_viewed=True,
        on_unsupported_targets="warn",
    )
    recommend_seconds = time.perf_counter() - start
    logger.info("recommend took %.1f s (%d rows)", recommend_seconds, len(recs))

    out = pd.DataFrame(
        {
            "user_id": recs[Columns.User].astype(str).to_numpy(),
            "item_id": recs[Columns.Item].astype(str).to_numpy(),
            "rank": recs[Columns.Rank].astype("int64").to_numpy(),
        }
    ).sort_values(["user_id", "rank"], kind="stable")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(out_path, index=False)

    params = model.get_params(simple_types=True)
    # get_params leaves out a few keys (recommend_n_threads, recommend_use_torch_ranking
    # in 0.19): add every setting this run used, the runner's own keys included.
    for key, value in settings.items():
        params.setdefault(key, value)
    sidecar = {
        "fit_seconds": fit_seconds,
        "recommend_seconds": recommend_seconds,
        "settings": params,
        "rectools_version": rectools.__version__,
        "torch_version": torch.__version__,
        "pytorch_lightning_version": pytorch_lightning.__version__,
        "numpy_version": np.__version__,
        "python_version": sys.version.split()[0],
        "torch_num_threads": torch.get_num_threads(),
        "n_interactions": len(interactions),
        "n_users_train": int(interactions[Columns.User].nunique()),
        "n_items_train": int(interactions[Columns.Item].nunique()),
        "n_items_model": int(
            model.data_preparator.item_id_map.size
            - model.data_preparator.n_item_extra_tokens
        ),
        "n_users_requested": len(users),
        "n_users_with_recs": int(out["user_id"].nunique()),
    }
    Path(str(out_path) + ".json").write_text(
        json.dumps(sidecar, indent=2, sort_keys=True) + "\n"
    )
    return sidecar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--train",
        type=Path,
        required=True,
        help="TRAIN.parquet (user_id, item_id, timestamp[, value])",
    )
    parser.add_argument(
        "--users", type=Path, required=True, help="USERS.parquet (user_id)"
    )
    parser.add_argument("--k", type=int, required=True, help="recommendations per user")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="RECS.parquet to write (+ .json sidecar)",
    )
    parser.add_argument(
        "--settings", default="{}", help="JSON object overriding DEFAULT_SETTINGS"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Lightning's and RecTools' chatter (GPU availability, dataloader workers, ...) is noise here.
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    logging.captureWarnings(True)
    overrides = json.loads(args.settings)
    if not isinstance(overrides, dict):
        parser.error("--settings must be a JSON object")
    os.environ.setdefault(
        "CUBLAS_WORKSPACE_CONFIG", ":4096:8"
    )  # deterministic CUDA, if ever used
    run(args.train, args.users, args.k, args.out, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
