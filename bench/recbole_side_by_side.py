"""RecBole 1.2.1 itself on the anchor's split, per seed: the reference side of bench/anchor_recbole.py.

Runs in RecBole's own virtual environment, never in the project's (RecBole 1.2.1 needs numpy < 2):

    python3 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install torch==2.13.0 recbole==1.2.1 numpy==1.26.4 pandas==2.3.3 setuptools==80.10.2
    OMP_NUM_THREADS=1 TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 /tmp/recbole-venv/bin/python bench/recbole_side_by_side.py \\
        --model BERT4Rec --seed 0 --json /tmp/recbole_bert4rec_s0.json

Settings (issue 14.5, the same as the anchor's): RecBole's ml-100k atomic file (../shared/datasets/ml-100k),
no filtering, leave-one-out by time (``LS: valid_and_test``, order ``TO``), full ranking over all items,
d 64, 2 layers, 2 heads, FFN 256, hidden and attention dropout 0.5, CE, batch 256, Adam 1e-3, max length 50,
19 epochs with no early stop, the best epoch on valid NDCG@10 tested. BERT4Rec keeps RecBole's own
mask_ratio 0.2 and ft_ratio 0.5. Only RecBole's public API is called; nothing of it is in this repository.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared/datasets"


def config(model: str, seed: int, epochs: int, out: Path) -> dict:
    return {
        "model": model, "dataset": "ml-100k", "data_path": str(DATASETS), "checkpoint_dir": str(out),
        "seed": seed, "reproducibility": True, "device": "cpu", "use_gpu": False, "show_progress": False,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["NDCG", "Recall"], "topk": [10, 20], "valid_metric": "NDCG@10",
        "epochs": epochs, "stopping_step": epochs + 1, "eval_step": 1,
        "train_batch_size": 256, "eval_batch_size": 1024, "learning_rate": 1e-3, "train_neg_sample_args": None,
        "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": 50, "hidden_size": 64, "n_layers": 2, "n_heads": 2,
        "inner_size": 256, "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="BERT4Rec", choices=["BERT4Rec", "SASRec"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=19)
    parser.add_argument("--out", type=Path, default=Path("/tmp/recbole-side-by-side"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch
    from recbole.quick_start import run_recbole

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = (args.out / f"{args.model}-s{args.seed}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # RecBole writes log/ and log_tensorboard/ into the working directory
    start = time.perf_counter()
    settings = config(args.model, args.seed, args.epochs, out)
    result = run_recbole(model=args.model, dataset="ml-100k", config_dict=settings)
    figures = {"model": args.model, "seed": args.seed, "epochs": args.epochs,
               "seconds": time.perf_counter() - start, "best_valid_ndcg@10": float(result["best_valid_score"]),
               "test": {k: float(v) for k, v in result["test_result"].items()}}
    print(json.dumps(figures), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
