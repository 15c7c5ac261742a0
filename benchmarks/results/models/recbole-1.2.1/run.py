"""RecBole 1.2.1's SASRec / GRU4Rec on its ml-100k.inter under stseq's ML-100K protocol
(leave-one-out by timestamp, full ranking over all items, CE loss, hidden 64, max length 50,
early stopping on validation NDCG@10 with RecBole's stopping_step 10), printing one RESULT line.

A separate environment (RecBole 1.2.1 predates numpy 2 and pandas 3):

    python -m venv recbole-env && recbole-env/bin/pip install recbole==1.2.1 torch==2.13.0 \
        "numpy<2" "pandas<2.3" "scipy<1.14" "setuptools<70"
    OMP_NUM_THREADS=1 recbole-env/bin/python run.py SASRec 2020 200 [key=json-value ...]

It assembles RecBole's pipeline itself because recbole.quick_start imports ray, which failed
to import here, and reloads RecBole's own checkpoints with weights_only=False (torch >= 2.6).
On this 2-core machine one SASRec epoch took 277 s on one thread (RecBole trains every prefix
of every sequence as its own row: about 97,000 rows of 50 events per epoch), so the run was
stopped after its first epoch (sasrec-seed2020-epoch0.log).
"""
import json
import os
import sys
import time

import torch
_load = torch.load
torch.load = lambda *a, **k: _load(*a, **{**k, "weights_only": False})
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed, init_logger, get_model, get_trainer

def run_recbole(model, dataset, config_dict):
    config = Config(model=model, dataset=dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    data = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, data)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    return {"best_valid_score": best_valid_score, "valid": best_valid_result, "test": test_result}

model, seed, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
extra = dict(a.split("=", 1) for a in sys.argv[4:])
extra = {k: json.loads(v) for k, v in extra.items()}
config = {
    "data_path": os.path.join(os.path.dirname(__import__("recbole").__file__), "dataset_example"),
    "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
    "MAX_ITEM_LIST_LENGTH": 50,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "train_neg_sample_args": None, "loss_type": "CE",
    "metrics": ["NDCG", "Hit"], "topk": [10], "valid_metric": "NDCG@10",
    "epochs": epochs, "stopping_step": 10, "seed": seed, "reproducibility": True,
    "device": "cpu", "use_gpu": False, "show_progress": False,
    "checkpoint_dir": f"saved-{model}-{seed}", "hidden_size": 64,
    "log_wandb": False,
}
config.update(extra)
start = time.time()
result = run_recbole(model=model, dataset="ml-100k", config_dict=config)
result["seconds"] = time.time() - start
result["model"], result["seed"], result["extra"] = model, seed, extra
print("RESULT", json.dumps({k: (dict(v) if hasattr(v, "items") else v) for k, v in result.items()}, default=str))
