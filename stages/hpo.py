"""DVC stage `hpo`: the sweep (study in hpo.storage) -> artifacts/hpo/ (trials, ranking, Pareto front).

Light at import: with several local workers (``hpo.n_workers``) the stage starts them first, and
imports the sweep (torch, MLflow, Optuna) while they import theirs.
"""

from hpopipe.entry import late_imports, run
from hpopipe.sweep.local import early_workers
from hpopipe.sweep.signals import GracefulStop


def main() -> None:
    with GracefulStop().installed() as stop, early_workers("params.yaml", stop) as children:
        with late_imports():
            from hpopipe.sweep.stage import sweep_and_export
        sweep_and_export(stop, children)
    if stop.exit_code:  # exports are written; a non-zero exit keeps dvc.lock from recording a cut sweep
        raise SystemExit(stop.exit_code)


if __name__ == "__main__":
    run(main, imports_late=True)
