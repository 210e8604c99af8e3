"""External training code joining an hpopipe sweep: a plain PyTorch MLP, not built by hpopipe.

hpopipe proposes each trial's parameters (from the params file's search space) and seed,
decides pruning and keeps the budget, the lifecycle and the MLflow records; this script owns
the data, the model and the training loop. Start it as often as you like, at once:

    python examples/external_training.py --params examples/external.params.yaml &
    python examples/external_training.py --params examples/external.params.yaml

Together the processes run exactly ``hpo.n_trials`` trials (docs/external.md).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from torch import nn

import hpopipe


def load_table(path: str, target: str, seed: int) -> tuple[torch.Tensor, ...]:
    """A small table as standardised float tensors: train and validation, features and labels."""
    frame = pd.read_csv(path)
    y = pd.factorize(frame.pop(target), sort=True)[0]
    x = frame.to_numpy(dtype=np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    train, val = order[:cut], order[cut:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std
    return (
        torch.from_numpy(x[train]),
        torch.from_numpy(y[train]),
        torch.from_numpy(x[val]),
        torch.from_numpy(y[val]),
    )


def build_mlp(n_in: int, n_out: int, params: dict) -> nn.Module:
    """The model this script owns; hpopipe only hands it the sampled sizes."""
    layers: list[nn.Module] = [nn.Linear(n_in, params["width"]), nn.ReLU()]
    width = params["width"]
    if params["depth"] == 2:  # width2 exists only then (a conditional parameter)
        layers += [nn.Linear(width, params["width2"]), nn.ReLU()]
        width = params["width2"]
    return nn.Sequential(*layers, nn.Linear(width, n_out))


def train_trial(trial: hpopipe.Trial, data: tuple[torch.Tensor, ...], epochs: int) -> None:
    """Train one trial, reporting validation accuracy each epoch; tell the best."""
    x_tr, y_tr, x_val, y_val = data
    torch.manual_seed(trial.seed)  # the seed hpopipe derived from the sweep position
    model = build_mlp(x_tr.shape[1], int(y_tr.max()) + 1, trial.params)
    optimiser = torch.optim.Adam(model.parameters(), lr=trial.params["lr"])
    loss_fn = nn.CrossEntropyLoss()
    best = 0.0
    for epoch in range(epochs):
        model.train()
        for batch in torch.randperm(len(x_tr)).split(32):
            optimiser.zero_grad()
            loss_fn(model(x_tr[batch]), y_tr[batch]).backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x_val).argmax(1) == y_val).float().mean())
        best = max(best, accuracy)
        if trial.report(epoch, accuracy):  # the configured pruner says stop: recorded as PRUNED
            return
    trial.tell(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="examples/external.params.yaml")
    parser.add_argument("--data", default="data/raw/breast_cancer.csv")
    parser.add_argument("--target", default="diagnosis")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with hpopipe.connect(args.params) as sweep:
        epochs = sweep.params.train.max_epochs
        data = load_table(args.data, args.target, sweep.params.seed)
        while (trial := sweep.ask()) is not None:
            with trial:  # an exception fails this trial only; Ctrl-C hands it back for a retry
                train_trial(trial, data, epochs)
            print(f"trial {trial.number}: {trial.state.name} {trial.params}")


if __name__ == "__main__":
    main()
