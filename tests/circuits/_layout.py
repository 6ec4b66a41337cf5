"""Run folders in the authors' exact layout (spec §4), written by the tests themselves.

``config.json`` with every key of the authors' ``config.yaml`` (as ``json.dump(config.__dict__)``
writes it), ``ckpt_0.pt`` and ``ckpt_{k}.pt`` every ``num_epoch // n_save`` steps holding
``TFModel.state_dict()`` (the authors' keys), ``ckpt.pt`` (= the last), a dense
``err_arr.json`` (one record per step, ``epoch = 0 … num_epoch − 1``), ``test.pth`` and a
``figures/`` folder, as ``synthetic-experiments/main.py`` and ``train.py`` leave them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lmlab.models.rotary_tf import RotaryConfig, TFModel

V, D = 20, 16          # tiny but V != d, so a transposed E would show


def source_config(num_epoch: int, n_save: int, out_dir: str, **over: Any) -> dict[str, Any]:
    """Every key of the authors' config.yaml, with run.sh's values where they set one."""
    cfg = {
        "seed": 2026, "vocab_size": V, "d_model": D, "ff_dim": 256, "num_heads": 1,
        "num_layers": 2, "linear_attn": False, "residual": True, "mlp": False, "dropout": 0.1,
        "norm": True, "output_norm": False, "pos": "rotary", "rotary_theta": 10000,
        "max_seq_len": 16, "sample_size": 5000, "sample_size_test": 5000,
        "regime": "varied repetition", "distr": "zipf", "rep_l": 10, "rep_h": 20,
        "ood_len_pattern": 25, "pool_size": None, "sig": 2, "device": "cuda",
        "fancy_opt": False, "use_wd": True, "schedule": "constant", "fresh_sample": True,
        "label_smoothing": False, "lr": 0.001, "wd": 0.0005, "batch_size": 50,
        "num_epoch": num_epoch, "wandb_log": False, "plot_attn_every_epoch": 100,
        "print_output": False, "n_save": n_save, "up_to_first_save": False,
        "ignore_segment": 1, "ignore_burning": 4, "out_dir": out_dir,
    }
    cfg.update(over)
    return cfg


def err_record(epoch: int) -> dict[str, float]:
    """The authors' per-step record, with values that identify the epoch."""
    return {"epoch": epoch, "loss_train": 4.0 - epoch / 100, "err_train": 0.9 - epoch / 1000,
            "loss_test": 4.1 - epoch / 100, "err_test": 0.91 - epoch / 1000,
            "loss_ood": 4.2 - epoch / 100, "err_ood": 0.98 - epoch / 2000}


def write_source_run(folder: Path, *, num_epoch: int = 40, n_save: int = 4, seed: int = 0,
                     config: bool = True, err: bool = True, drop: tuple[int, ...] = (),
                     theta: bool = True) -> list[int]:
    """Write one setting; returns the checkpoint steps written (``drop``: steps left out)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "figures").mkdir(exist_ok=True)
    grid = num_epoch // n_save
    steps = [k for k in range(0, num_epoch + 1, grid) if k not in drop]
    arch = RotaryConfig(vocab_size=V, d_model=D, max_seq_len=16)
    for i, k in enumerate(steps):
        torch.manual_seed(1000 * seed + i)
        model = TFModel(arch)
        with torch.no_grad():   # spread the LayerNorm gains so that folding them matters
            for block in model.h:
                block.ln_1.weight.uniform_(0.5, 1.5)
        torch.save(model.state_dict(), folder / f"ckpt_{k}.pt")
    if steps:
        torch.save(torch.load(folder / f"ckpt_{steps[-1]}.pt", weights_only=True),
                   folder / "ckpt.pt")
    if config:
        cfg = source_config(num_epoch, n_save, str(folder))
        if not theta:
            del cfg["rotary_theta"]   # older run folders lack it
        (folder / "config.json").write_text(json.dumps(cfg))
    if err:
        (folder / "err_arr.json").write_text(
            json.dumps([err_record(e) for e in range(num_epoch)]))
    torch.save([torch.zeros(4, 16, dtype=torch.long)] * 3, folder / "test.pth")
    return steps
