"""torch.compile's tracer stays unloaded through eager training, and loads when something compiles.

Each check runs in a fresh interpreter: in the test process another test may have loaded it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from hpopipe.config import ModelConfig, TrainConfig
    from hpopipe.training import lazy_dynamo, loop

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 3)).astype("float32"), rng.integers(0, 2, 64)
    settings = TrainConfig(max_epochs=3, patience=100, batch_size=16, device="cpu")
    task = loop.Task("classification", 2, "accuracy")
    first = loop.fit(ModelConfig(name="mlp"), {"width": 8, "n_layers": 1}, settings, task,
                     (x, y), (x, y), seed=5)
    print("after fit:", lazy_dynamo.deferred())
    compiled = torch.compile(lambda t: t * 2 + 1, backend="eager")
    print("compiled:", compiled(torch.ones(2)).tolist(), lazy_dynamo.deferred(),
          type(sys.modules["torch._dynamo"]).__name__)
    again = loop.fit(ModelConfig(name="mlp"), {"width": 8, "n_layers": 1}, settings, task,
                     (x, y), (x, y), seed=5)
    print("same after the real load:", [h for h in first.history] == [h for h in again.history])
    """
)


def test_eager_training_never_loads_the_tracer_and_compiling_still_works() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert "after fit: True" in lines
    assert "compiled: [3.0, 3.0] False module" in lines  # the real module, loaded on demand
    assert "same after the real load: True" in lines  # training is the same with the tracer loaded
