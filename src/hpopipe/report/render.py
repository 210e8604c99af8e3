"""The report stage: DVC plot data and one self-contained HTML page, from what the pipeline wrote.

It only reads finished outputs (the study, CV results, the best configuration,
the model and the test split) and trains nothing. No sweep or CV module
imports it, so a change here re-runs the report and never makes the sweep stale.
"""

from __future__ import annotations

import functools
import html
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.importance import (
    BaseImportanceEvaluator,
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
    get_param_importances,
)
from optuna.trial import FrozenTrial, TrialState

from hpopipe import artifacts, baselines, metrics
from hpopipe.config import DataConfig
from hpopipe.errors import HpopipeError
from hpopipe.handoffs.best import BestConfig, read_best
from hpopipe.handoffs.cv import CvSummary, read_cv
from hpopipe.handoffs.evaluation import RefitEvaluation, read_evaluation
from hpopipe.handoffs.schema import PreparedSchema, read_schema
from hpopipe.report import plots
from hpopipe.sweep.budget import REUSED_FROM, WARM_STARTED
from hpopipe.sweep.optuna_internals import TrialsView
from hpopipe.sweep.storage import load_existing
from hpopipe.training.split import validation_rows

log = logging.getLogger(__name__)

PLOTS_DIR = Path("plots")
REPORT_HTML = Path("reports/index.html")
# Every plot file is written on every run, header-only where it does not apply
# (a confusion matrix for regression): DVC reports a missing plot file as an error.
PLOT_COLUMNS = {
    "history": ["number", "value", "best"],
    "importance": ["param", "importance"],
    "learning_curve": ["epoch", "value"],
    "refit_curve": ["epoch", "train_loss"],
    "confusion": ["actual", "predicted"],
    "residuals": ["actual", "predicted", "residual"],
}
# The trials Optuna's intermediate-values figure draws (a failed trial's curve is left out).
CURVE_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
# With fewer COMPLETE trials every evaluator returns equal shares: a plot of nothing.
MIN_TRIALS_FOR_IMPORTANCE = 2


@dataclass
class Sources:
    """Everything the report shows, read once from the pipeline's outputs."""

    study: optuna.Study
    cv_results: pd.DataFrame
    cv_summary: CvSummary
    best: BestConfig
    test_metrics: dict[str, Any]  # the network's metrics, and the baselines' under "baselines"
    test: RefitEvaluation  # the refit's test-split predictions and its per-epoch history
    data: DataConfig  # the data file, and the share of the train split the sweep validates on
    schema: PreparedSchema  # target, task, classes and row counts, as prepare wrote them

    @property
    def refit_history(self) -> list[dict[str, float]]:
        """The refit's training loss (and the rest) per epoch."""
        return self.test.history

    @property
    def metric(self) -> str:
        """The metric the sweep optimised and the winner was chosen by."""
        return self.best.metric

    @property
    def selected_trial(self) -> int:
        """The sweep trial whose configuration was refit (best by CV mean)."""
        return self.best.source.trial


def load_sources(data: DataConfig) -> Sources:
    """Read every input of the report from its place in the workspace (see :mod:`hpopipe.artifacts`).

    ``data`` is params.yaml's ``data`` section: the title block names its file. The report never
    loads the model (nor imports torch): the refit stage wrote what it draws of it.
    """
    hpo = artifacts.read_json(artifacts.metrics_file("hpo"))
    if "study" not in hpo:
        raise HpopipeError(f"{artifacts.metrics_file('hpo')}: no 'study' field (re-run the hpo stage)")
    return Sources(
        study=exported_view(
            open_study(str(hpo.get("storage", "sqlite")), str(hpo["study"])),
            artifacts.read_frame(artifacts.TRIALS_CSV),
        ),
        cv_results=artifacts.read_frame(artifacts.CV_RESULTS),
        cv_summary=read_cv(artifacts.metrics_file("cv")),
        best=read_best(artifacts.BEST_CONFIG),
        test_metrics=artifacts.read_json(artifacts.metrics_file("test")),
        test=read_evaluation(artifacts.REFIT_EVALUATION),  # never the model: no torch here
        data=data,
        schema=read_schema(artifacts.SCHEMA),
    )


def open_study(setting: str, name: str) -> optuna.Study:
    """Load the finished study from the storage the sweep used; never creates an empty one."""
    return load_existing(setting, name, field=str(artifacts.metrics_file("hpo")))


def exported_view(study: optuna.Study, trials: pd.DataFrame) -> optuna.Study:
    """The study as the hpo stage exported it: only the trials ``trials.csv`` lists.

    The study may have grown since (another DVC experiment with a larger ``hpo.n_trials`` shares
    it); the report shows the sweep this pipeline's outputs come from, so that it stays a
    function of its deps.
    """
    numbers = frozenset(int(n) for n in trials["number"])
    return TrialsView(study, lambda t: t.number in numbers)


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)


def _maximize(sources: Sources) -> bool:
    # The direction of the first objective, the metric the winner was chosen by.
    return metrics.objective_direction(sources.metric) == "maximize"


def _first(trial: FrozenTrial) -> float | None:
    """A trial's value, or its first objective's in a multi-objective study (``trial.value`` raises)."""
    return None if trial.values is None else float(trial.values[0])


def _first_objective(trial: FrozenTrial) -> float:
    # The importance target of a multi-objective study (Optuna asks for one).
    return float(trial.values[0])


def _multi(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def history_frame(study: optuna.Study) -> pd.DataFrame:
    """Optimisation history: every COMPLETE trial's value and the best value up to it.

    Pruned trials are left out: their value is the score at the epoch they were
    stopped, not comparable with a finished trial's.
    """
    trials = _complete(study)
    values = pd.Series([_first(t) for t in trials], dtype=float)
    # The direction the study was created with (``study.direction`` raises for several objectives).
    best = values.cummax() if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else values.cummin()
    return pd.DataFrame({"number": [t.number for t in trials], "value": values, "best": best})


@dataclass(frozen=True)
class Importances:
    """Parameter importances, most important first, and the evaluator that computed them."""

    frame: pd.DataFrame
    evaluator: BaseImportanceEvaluator | None  # None: too few COMPLETE trials, nothing computed
    name: str  # the evaluator as the figure's caption names it


class _Remembered(BaseImportanceEvaluator):
    """An evaluator that computes once per question and then repeats its answer.

    ``plots/importance.csv`` and the figure (Optuna's ``plot_param_importances`` evaluates
    again) show one computation: an fANOVA forest costs a tenth of a second a time.
    """

    def __init__(self, inner: BaseImportanceEvaluator) -> None:
        self._inner = inner
        self._answers: dict[tuple[tuple[str, ...] | None, Any], dict[str, float]] = {}

    def evaluate(
        self,
        study: optuna.Study,
        params: list[str] | None = None,
        *,
        target: Callable[[FrozenTrial], float] | None = None,
    ) -> dict[str, float]:
        key = (None if params is None else tuple(params), target)
        if key not in self._answers:
            self._answers[key] = self._inner.evaluate(study, params, target=target)
        return dict(self._answers[key])


@functools.lru_cache(maxsize=2)
def importances(study: optuna.Study, seed: int) -> Importances:
    """Parameter importances; none below two COMPLETE trials.

    fANOVA (seeded, so the plot is reproducible) is the evaluator because it is the best
    understood (Optuna 5 defaults to PED-ANOVA); it fails when every trial scored the same,
    and then PED-ANOVA answers instead. The figure is drawn with the same evaluator.
    """
    if len(_complete(study)) < MIN_TRIALS_FOR_IMPORTANCE:
        return Importances(pd.DataFrame(columns=PLOT_COLUMNS["importance"]), None, "")
    target = _first_objective if _multi(study) else None
    evaluator: BaseImportanceEvaluator = _Remembered(FanovaImportanceEvaluator(seed=seed))
    name = f"fANOVA, seed {seed}"
    try:
        found = get_param_importances(study, evaluator=evaluator, target=target)
    except RuntimeError as err:
        log.warning("fANOVA importances failed (%s); using PED-ANOVA", err)
        evaluator = _Remembered(PedAnovaImportanceEvaluator())
        name = "PED-ANOVA, as fANOVA could not answer"
        found = get_param_importances(study, evaluator=evaluator, target=target)
    frame = pd.DataFrame({"param": list(found), "importance": [round(float(v), 6) for v in found.values()]})
    frame = frame.sort_values(["importance", "param"], ascending=[False, True], ignore_index=True)
    return Importances(frame, evaluator, name)


def importance_frame(study: optuna.Study, seed: int) -> pd.DataFrame:
    """``plots/importance.csv``: the importances of :func:`importances` (header only when there are none)."""
    return importances(study, seed).frame


def learning_curve_frame(study: optuna.Study, number: int) -> pd.DataFrame:
    """The validation score a trial reported after each epoch (its intermediate values)."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None:
        raise HpopipeError(
            f"{artifacts.BEST_CONFIG}: source.trial {number} is not a trial of study {study.study_name}"
        )
    steps = sorted(trial.intermediate_values)
    return pd.DataFrame({"epoch": steps, "value": [trial.intermediate_values[s] for s in steps]})


def refit_curve_frame(history: list[dict[str, float]]) -> pd.DataFrame:
    """The refit's training loss per epoch (header only until the model file carries a history)."""
    rows = [{"epoch": int(r["epoch"]), "train_loss": float(r["train_loss"])} for r in history]
    return pd.DataFrame(rows, columns=PLOT_COLUMNS["refit_curve"])


def confusion_frame(test: RefitEvaluation) -> pd.DataFrame:
    """One (actual, predicted) row per test row: the input DVC's ``confusion`` template counts."""
    if test.kind != "classification":
        return pd.DataFrame(columns=PLOT_COLUMNS["confusion"])
    return pd.DataFrame({"actual": test.actual, "predicted": test.predicted})


def residuals_frame(test: RefitEvaluation) -> pd.DataFrame:
    """One (actual, predicted, residual) row per test row, for regression."""
    if test.kind != "regression":
        return pd.DataFrame(columns=PLOT_COLUMNS["residuals"])
    actual, predicted = np.asarray(test.actual), np.asarray(test.predicted)
    return pd.DataFrame({"actual": actual, "predicted": predicted, "residual": actual - predicted})


def plot_frames(sources: Sources, seed: int) -> dict[str, pd.DataFrame]:
    """The DVC plot files, by name (``plots/<name>.csv``); see :data:`PLOT_COLUMNS`."""
    return {
        "history": history_frame(sources.study),
        "importance": importance_frame(sources.study, seed),
        "learning_curve": learning_curve_frame(sources.study, sources.selected_trial),
        "refit_curve": refit_curve_frame(sources.refit_history),
        "confusion": confusion_frame(sources.test),
        "residuals": residuals_frame(sources.test),
    }


def plot_path(name: str) -> Path:
    """Where the plot file ``name`` lives (the paths the ``plots:`` block of dvc.yaml names)."""
    return PLOTS_DIR / f"{name}.csv"


# ---------------------------------------------------------------- the HTML page

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:70rem;
padding:0 1rem;color:#1f2933;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d9e2ec}
.sub{color:#52606d;margin-top:0}.grid{display:flex;flex-wrap:wrap;gap:1.5rem}
table{border-collapse:collapse;font-size:.92rem}th,td{padding:.25rem .7rem;text-align:left;
border-bottom:1px solid #e4e7eb}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.selected td{background:#fff7d6;font-weight:600}
.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(30rem,1fr));gap:1rem 2rem}
figure{margin:0}figure.wide{grid-column:1/-1}figure svg{max-width:100%;height:auto}
figcaption{color:#52606d;font-size:.88rem}.note{color:#8d2b0b}
"""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]], selected: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{html.escape(_fmt(c))}</td>'
            if isinstance(c, (int, float))
            else f"<td>{html.escape(_fmt(c))}</td>"
            for c in row
        )
        body.append(f'<tr class="selected">{cells}</tr>' if i == selected else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(svg: str, caption: str, wide: bool = False) -> str:
    css = ' class="wide"' if wide else ""
    return f"<figure{css}>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _summary(sources: Sources) -> str:
    trials = sources.study.get_trials(deepcopy=False)
    counts = ", ".join(
        f"{sum(t.state == s for t in trials)} {s.name.lower()}"
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    direction = "higher is better" if _maximize(sources) else "lower is better"
    return (
        f"Study <code>{html.escape(sources.study.study_name)}</code>: {len(trials)} trials ({counts}). "
        f"Metric <code>{html.escape(sources.metric)}</code> ({direction}); "
        f"trial {sources.selected_trial} was selected by cross-validation and refit.{_pareto_note(sources)}"
        f"{warm_start_note(sources.study)}"
    )


def warm_start_note(study: optuna.Study) -> str:
    """What earlier studies gave this one (``hpo.warm_start``): trials added, results reused."""
    added = int(study.user_attrs.get(WARM_STARTED, 0))
    reused = sum(REUSED_FROM in t.user_attrs for t in study.get_trials(deepcopy=False))
    parts = []
    if added:
        parts.append(
            f" It began with {added} finished trials of earlier studies on the same data and settings "
            "(warm start): they steered the sampler and are not counted above."
        )
    if reused:
        parts.append(
            f" {reused} trials took the result of an identical configuration an earlier study trained."
        )
    return "".join(parts)


def _pareto_note(sources: Sources) -> str:
    if not _multi(sources.study):
        return ""
    names = sources.study.metric_names or []
    rule = sources.best.source.rule or "?"
    return (
        f" Multi-objective ({html.escape(', '.join(names))}): a Pareto front of "
        f"{len(sources.study.best_trials)} trials, "
        f"chosen from by the rule <code>{html.escape(str(rule))}</code>; "
        "the figures show the first objective."
    )


BASELINE_LABELS = {baselines.GRADIENT_BOOSTING: "gradient boosting", baselines.DUMMY: "dummy"}


def metrics_table(sources: Sources) -> str:
    """Test-split scores (metrics/test.json): the refit network, then each baseline beside it."""
    found = sources.test_metrics.get(baselines.KEY) or {}
    names = [name for name in BASELINE_LABELS if name in found]
    rows = [
        [key, float(value), *(float(found[name].get(key, math.nan)) for name in names)]
        for key, value in sorted(sources.test_metrics.items())
        if key != baselines.KEY
    ]
    return _table(["metric", "network", *(BASELINE_LABELS[name] for name in names)], rows)


def baseline_sentence(sources: Sources) -> str:
    """Whether the network beats the gradient-boosting baseline on the sweep's metric, and by how much."""
    verdict = baselines.verdict(sources.test_metrics, sources.metric)
    if verdict is None:
        return "No baseline in metrics/test.json (re-run the refit stage)."
    return verdict.sentence()


def best_config_table(sources: Sources) -> str:
    """The selected hyperparameters and the settings the refit used."""
    best = sources.best
    rows: list[list[Any]] = [["model", best.model.name or best.model.factory or "?"]]
    rows += [[name, value] for name, value in sorted(best.params.items())]
    rows += [["epochs (refit)", best.epochs], ["seed", best.seed]]
    return _table(["setting", "value"], rows)


def cv_table(sources: Sources) -> str:
    """Mean ± std of every CV candidate, best first, the selected one highlighted.

    A candidate stopped early shows the mean of the folds it ran and says so.
    """
    values = {t.number: _first(t) for t in sources.study.get_trials(deepcopy=False)}
    results = sources.cv_results
    folds = results.sort_values("fold").groupby("trial")["score"].apply(list)
    stopped = set(results.loc[results["stopped_early"], "trial"]) if "stopped_early" in results else set()
    rows: list[list[Any]] = []
    for stats in sources.cv_summary.candidates:  # best CV mean first, then those stopped early
        run = folds.get(stats.trial, [])
        scores = ", ".join(f"{s:.4f}" for s in run)
        if stats.trial in stopped:
            scores += (
                f" (stopped early after {len(run)} of {sources.cv_summary.folds} folds: it could not win)"
            )
        sweep = values.get(stats.trial)
        rows.append(
            [
                stats.trial,
                float("nan") if sweep is None else float(sweep),
                f"{stats.mean:.4f} ± {stats.std:.4f}",
                scores,
                stats.best_epoch_mean,
            ]
        )
    selected = next((i for i, r in enumerate(rows) if r[0] == sources.selected_trial), None)
    header = ["trial", "sweep value", f"CV {sources.metric} (mean ± std)", "fold scores", "mean best epoch"]
    return _table(header, rows, selected)


def figures(sources: Sources, frames: dict[str, pd.DataFrame], seed: int) -> list[str]:
    """Every figure of the page, as ``<figure>`` elements, or a note where one cannot be drawn.

    The sweep's figures are Optuna's (see :mod:`hpopipe.report.plots`), each showing the first
    objective of a multi-objective study; the refit's loss and the test-split figure are ours.
    """
    study, metric = sources.study, sources.metric
    target = _first_objective if _multi(study) else None
    label = f"validation {metric}"
    matplotlib_plots = optuna.visualization.matplotlib
    out = []
    n_complete = len(_complete(study))
    if n_complete:
        fig = plots.optuna_figure(
            lambda: matplotlib_plots.plot_optimization_history(study, target=target, target_name=label)
        )
        caption = (
            f"Optimisation history: {n_complete} complete trials and the best so far "
            "(pruned ones not shown: their value is the score at the epoch they were stopped)."
        )
        out.append(_figure(plots.to_svg(fig, "history"), caption))
    else:
        out.append(_note("Optimisation history: no COMPLETE trials yet."))
    found = importances(study, seed)
    if found.evaluator is not None and len(found.frame):
        evaluator = found.evaluator
        fig = plots.optuna_figure(
            lambda: matplotlib_plots.plot_param_importances(
                study, evaluator=evaluator, target=target, target_name=label
            ),
            height=max(1.8, 0.45 * len(found.frame) + 1.0),
        )
        caption = f"Parameter importances ({found.name}; shares that sum to 1)."
        out.append(_figure(plots.to_svg(fig, "importance"), caption))
    else:
        out.append(
            _note(
                f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials "
                "and parameters that every one of them sampled."
            )
        )
    if n_complete:
        fig = plots.optuna_figure(
            lambda: matplotlib_plots.plot_parallel_coordinate(study, target=target, target_name=label),
            width=max(plots.WIDTH * 1.6, 1.3 * (len({p for t in _complete(study) for p in t.params}) + 2)),
        )
        caption = "Parallel coordinates of the complete trials, coloured by their value."
        out.append(_figure(plots.to_svg(fig, "parallel"), caption, wide=True))
    out.append(_curves_figure(sources))
    if len(frames["refit_curve"]):
        svg = plots.to_svg(plots.refit_loss(frames["refit_curve"]), "refit")
        epochs = len(frames["refit_curve"])
        out.append(_figure(svg, f"The refit's training loss per epoch ({epochs} epochs, all training rows)."))
    else:
        out.append(_note("The refit's training loss: the model file carries no history."))
    out.append(_test_figure(sources.test, frames))
    return out


def _curves_figure(sources: Sources) -> str:
    """Learning curves of every trial of the sweep, pruned ones grey, the selected one highlighted."""
    drawn = [
        t for t in sources.study.get_trials(deepcopy=False, states=CURVE_STATES) if t.intermediate_values
    ]
    if not drawn:  # a multi-objective sweep reports no intermediate values (Optuna cannot prune it)
        return _note("Learning curves: the sweep's trials reported no per-epoch values (multi-objective).")
    pruned = sum(t.state == TrialState.PRUNED for t in drawn)
    fig = plots.intermediate_values(sources.study, sources.selected_trial, sources.metric)
    hidden = ", ".join(f"{v:.3g}" for v in sorted(plots.off_scale(sources.study)))
    caption = (
        f"Learning curves of the sweep: validation {sources.metric} per epoch of {len(drawn)} trials "
        f"({pruned} pruned, in grey: each stops at the epoch it was pruned); "
        f"trial {sources.selected_trial}, selected by cross-validation, in red. The axis spans the "
        "complete trials' curves" + (f"; pruned epochs that scored outside it: {hidden}." if hidden else ".")
    )
    return _figure(plots.to_svg(fig, "curves"), caption, wide=True)


def _test_figure(test: RefitEvaluation, frames: dict[str, pd.DataFrame]) -> str:
    if test.kind == "classification":
        svg = plots.to_svg(plots.confusion(frames["confusion"], test.classes), "confusion")
        return _figure(svg, f"Confusion matrix on the test split ({len(test.actual)} rows).")
    svg = plots.to_svg(plots.residuals(frames["residuals"]), "residuals")
    return _figure(svg, f"Residuals on the test split ({len(test.actual)} rows).")


def title(sources: Sources) -> str:
    """What the report is about, first: the data file and the target (the study is named below)."""
    return f"{sources.data.path.name} → {sources.schema.target}"


def data_line(sources: Sources) -> str:
    """The task and the rows of each split, as the pipeline divided them."""
    schema, rows = sources.schema, sources.schema.n_rows
    task: str = schema.task
    if task == "classification":
        task += f" ({len(schema.classes)} classes: {', '.join(str(c) for c in schema.classes)})"
    val = validation_rows(rows.train, sources.data.val_size)
    return (
        f"Data <code>{html.escape(str(sources.data.path))}</code>, target "
        f"<code>{html.escape(schema.target)}</code>: {html.escape(task)}. "
        f"{rows.train + rows.test} rows: {rows.train} train (the sweep fits on {rows.train - val} "
        f"and validates on {val}; cross-validation and the refit use all {rows.train}), "
        f"{rows.test} test (scored once, by the refit model and the baselines)."
    )


def render_html(sources: Sources, frames: dict[str, pd.DataFrame], seed: int) -> str:
    """The whole report as one HTML page: inline SVG and CSS, no scripts, nothing fetched.

    Holds no timestamp, so the same inputs give the same bytes. ``seed`` seeds the importance
    evaluator, as for ``plots/importance.csv``.
    """
    heading = title(sources)
    tables = (
        f"<div><h2>Test metrics</h2>{metrics_table(sources)}"
        f"<p class='verdict'>{html.escape(baseline_sentence(sources))}</p></div>"
        f"<div><h2>Best configuration</h2>{best_config_table(sources)}</div>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>hpopipe report: {html.escape(heading)}</title><style>{_CSS}</style></head>\n<body>"
        f"<h1>{html.escape(heading)}</h1><p class='sub data'>{data_line(sources)}</p>"
        f"<p class='sub'>{_summary(sources)}</p>"
        f'<div class="grid">{tables}</div>'
        f"<h2>Cross-validation</h2>{cv_table(sources)}"
        f'<h2>Sweep and model</h2><div class="figures">{"".join(figures(sources, frames, seed))}</div>'
        "</body></html>\n"
    )
