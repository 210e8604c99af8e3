"""The report stage: DVC plot data, the HTML page, and what a browser and DVC make of them.

The pipeline's outputs are built once per module by calling the stages' main()
in-process on a tiny real run (a classification and a regression), then the
report stage runs on them as it would under DVC.
"""

from __future__ import annotations

import html
import importlib
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from matplotlib import image
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpopipe.config import load_params, parse_params
from hpopipe.data import to_arrays
from hpopipe.errors import HpopipeError
from hpopipe.report import plots, render
from hpopipe.training.loop import task_of
from hpopipe.training.split import split_validation
from tests.conftest import REPO, TINY_PARAMS, inside, make_project, subprocess_env
from tests.sweeps import study_storage
from tools.importgraph import closure as library_closure

PIPELINE = ["prepare", "hpo", "cv", "select", "refit"]
SNIPPET = yaml.safe_load((REPO / "tests/data/report_stage.yaml").read_text())
CHROMIUM = Path("/usr/bin/chromium")
# history, importances, parallel coordinates (Optuna's), every trial's learning curve (Optuna's,
# restyled), the refit's loss, the confusion matrix or residuals
SVG_COUNT = 6

REGRESSION_PARAMS = """\
seed: 3
data:
  path: data/raw/synthetic.csv
  target: y
  task: regression
model:
  name: mlp
search_space:
  lr: {type: log_uniform, min: 1.0e-3, max: 3.0e-2}
  width: {type: choice, values: [8, 16]}
hpo:
  n_trials: 3
  metric: rmse
  sampler: {name: random}
  pruner: {name: none}
train:
  max_epochs: 3
  patience: 2
cv:
  top_k: 1
  folds: 2
refit:
  epochs: auto
cleanup:
  keep_best: 1
"""


def run_stages(root: Path, names: list[str]) -> None:
    with inside(root):
        for name in names:
            importlib.import_module(f"stages.{name}").main()


@pytest.fixture(scope="module")
def classification(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("classification")
    (root / "data/raw").mkdir(parents=True)
    shutil.copy(REPO / "data/raw/breast_cancer.csv", root / "data/raw")
    (root / "params.yaml").write_text(TINY_PARAMS)
    run_stages(root, [*PIPELINE, "report"])
    return root


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("regression")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["y"] = 2 * x[:, 0] - x[:, 1] + rng.normal(scale=0.1, size=160)
    (root / "data/raw").mkdir(parents=True)
    frame.to_csv(root / "data/raw/synthetic.csv", index=False)
    (root / "params.yaml").write_text(REGRESSION_PARAMS)
    run_stages(root, [*PIPELINE, "report"])
    return root


def plot(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(root / render.plot_path(name))


def study_of(root: Path) -> optuna.Study:
    name = json.loads((root / "metrics/hpo.json").read_text())["study"]
    return optuna.load_study(study_name=name, storage=study_storage(root))


# ---------------------------------------------------------------- plot data


def test_every_plot_file_is_written_with_the_columns_dvc_yaml_names(classification: Path) -> None:
    for name, columns in render.PLOT_COLUMNS.items():
        assert list(plot(classification, name).columns) == columns, name
    named = {f for p in SNIPPET["plots"] for spec in p.values() for f in spec["y"]}
    assert named == {str(render.plot_path(n)) for n in render.PLOT_COLUMNS}


def test_history_is_the_complete_trials_with_the_best_so_far(classification: Path) -> None:
    trials = pd.read_csv(classification / "artifacts/hpo/trials.csv")
    complete = trials[trials["state"] == "COMPLETE"].sort_values("number")
    history = plot(classification, "history")
    assert list(history["number"]) == list(complete["number"])
    assert np.allclose(history["value"], complete["value"])
    assert np.allclose(history["best"], complete["value"].cummax())  # macro_f1: higher is better


def test_importances_cover_the_search_space_and_sum_to_one(classification: Path) -> None:
    frame = plot(classification, "importance")
    assert set(frame["param"]) == {"lr", "n_layers", "width", "dropout"}
    assert math.isclose(frame["importance"].sum(), 1.0, abs_tol=1e-4)
    assert list(frame["importance"]) == sorted(frame["importance"], reverse=True)


def test_learning_curve_is_the_selected_trials_reported_epochs(classification: Path) -> None:
    best = yaml.safe_load((classification / "artifacts/best/config.yaml").read_text())
    trial = study_of(classification).trials[best["source"]["trial"]]
    curve = plot(classification, "learning_curve")
    assert list(curve["epoch"]) == sorted(trial.intermediate_values)
    assert list(curve["value"]) == [trial.intermediate_values[e] for e in curve["epoch"]]
    refit = plot(classification, "refit_curve")  # the refit's history travels in the model file
    assert list(refit["epoch"]) == list(range(1, best["epochs"] + 1))


def test_refit_curve_and_predictions_come_from_the_refit_s_evaluation_file(
    classification: Path, tmp_path: Path
) -> None:
    # The report draws what the refit stage wrote (artifacts/refit/evaluation.json), never the model.
    root = tmp_path / "project"
    shutil.copytree(classification, root)
    evaluation = json.loads((root / "artifacts/refit/evaluation.json").read_text())
    assert len(evaluation["actual"]) == len(pd.read_parquet(root / "data/prepared/test.parquet"))
    evaluation["history"] = [{"epoch": 1.0, "train_loss": 0.6}, {"epoch": 2.0, "train_loss": 0.4}]
    evaluation["predicted"] = [evaluation["classes"][0]] * len(evaluation["actual"])
    (root / "artifacts/refit/evaluation.json").write_text(json.dumps(evaluation))
    (root / "models/model.pt").unlink()
    run_stages(root, ["report"])
    curve = plot(root, "refit_curve")
    assert list(curve["epoch"]) == [1, 2] and list(curve["train_loss"]) == [0.6, 0.4]
    assert "The refit&#x27;s training loss per epoch (2 epochs" in (root / render.REPORT_HTML).read_text()
    confusion = plot(root, "confusion")
    assert set(confusion["predicted"]) == {evaluation["classes"][0]}


def test_confusion_rows_reproduce_the_test_metrics(classification: Path) -> None:
    confusion = plot(classification, "confusion")
    test = json.loads((classification / "metrics/test.json").read_text())
    schema = json.loads((classification / "data/prepared/schema.json").read_text())
    assert len(confusion) == schema["n_rows"]["test"]
    assert set(confusion["actual"]) | set(confusion["predicted"]) <= set(schema["classes"])
    assert math.isclose((confusion["actual"] == confusion["predicted"]).mean(), test["accuracy"])
    assert plot(classification, "residuals").empty


def test_residuals_reproduce_the_test_rmse(regression: Path) -> None:
    residuals = plot(regression, "residuals")
    test = json.loads((regression / "metrics/test.json").read_text())
    schema = json.loads((regression / "data/prepared/schema.json").read_text())
    assert len(residuals) == schema["n_rows"]["test"]
    assert np.allclose(residuals["residual"], residuals["actual"] - residuals["predicted"])
    assert math.isclose(float(np.sqrt((residuals["residual"] ** 2).mean())), test["rmse"], rel_tol=1e-5)
    assert plot(regression, "confusion").empty
    history = plot(regression, "history")
    assert np.allclose(history["best"], history["value"].cummin())  # rmse: lower is better


def _study(direction: str, values: list[float], pruned: int = 0) -> optuna.Study:
    study = optuna.create_study(direction=direction)  # type: ignore[arg-type]
    dists = {"x": FloatDistribution(0.0, 1.0), "k": IntDistribution(1, 3)}
    for i, value in enumerate(values):
        params = {"x": i / 10, "k": 1 + i % 3}
        study.add_trial(create_trial(value=value, params=params, distributions=dists))
    for _ in range(pruned):
        study.add_trial(create_trial(state=TrialState.PRUNED, params={"x": 0.5, "k": 2}, distributions=dists))
    return study


@pytest.mark.parametrize("complete", [0, 1])
def test_importances_are_empty_below_two_complete_trials(complete: int) -> None:
    frame = render.importance_frame(_study("maximize", [0.5] * complete, pruned=3), seed=0)
    assert frame.empty and list(frame.columns) == ["param", "importance"]


@pytest.mark.filterwarnings("ignore:Target and region quantiles select the same set")
def test_importances_fall_back_when_fanova_cannot_answer() -> None:
    # Every trial scored the same: fANOVA finds zero variance and raises; PED-ANOVA answers.
    frame = render.importance_frame(_study("minimize", [1.0] * 6), seed=0)
    assert set(frame["param"]) == {"x", "k"}
    assert math.isclose(frame["importance"].sum(), 1.0, abs_tol=1e-4)


def test_conditional_parameters_are_drawn_where_they_were_sampled() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    def conditional(trial: optuna.Trial) -> float:
        branch = trial.suggest_categorical("branch", ["x", "y"])
        value = trial.suggest_float(f"p{branch}", 1e-3, 1.0, log=True)
        return value + (trial.suggest_int("depth", 1, 4) if branch == "x" else 0)

    study.optimize(conditional, n_trials=10)
    # Importances are computed over the parameters every trial has.
    assert list(render.importance_frame(study, seed=0)["param"]) == ["branch"]
    draw = optuna.visualization.matplotlib.plot_parallel_coordinate
    svg = plots.to_svg(plots.optuna_figure(lambda: draw(study, target_name="loss")), "parallel")
    assert all(f">{name}<" in svg for name in ("branch", "depth", "px", "py", "loss"))


def test_history_of_a_minimised_study_leaves_pruned_trials_out() -> None:
    history = render.history_frame(_study("minimize", [3.0, 1.0, 2.0], pruned=2))
    assert list(history["number"]) == [0, 1, 2]
    assert list(history["best"]) == [3.0, 1.0, 1.0]


# ---------------------------------------------------------------- the HTML page


def test_report_is_one_self_contained_page(classification: Path) -> None:
    page = (classification / render.REPORT_HTML).read_text()
    assert page.count("<svg") == SVG_COUNT
    assert "<script" not in page and "<link" not in page and "<img" not in page
    # The only URLs are XML namespace names, which browsers never fetch.
    assert "http" not in re.sub(r' xmlns(:\w+)?="[^"]*"', "", page)
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # five inline SVGs, and no id clashes between them


def test_report_tables_show_the_pipelines_numbers(classification: Path) -> None:
    page = (classification / render.REPORT_HTML).read_text()
    cv = json.loads((classification / "metrics/cv.json").read_text())
    for stats in cv["ranks"].values():
        assert f"{stats['mean']:.4f} ± {stats['std']:.4f}" in page
    test = json.loads((classification / "metrics/test.json").read_text())
    assert f"{test['macro_f1']:.4g}" in page
    best = yaml.safe_load((classification / "artifacts/best/config.yaml").read_text())
    selected = re.search(r'<tr class="selected"><td class="num">(\d+)</td>', page)
    assert selected is not None
    assert int(selected.group(1)) == best["source"]["trial"] == cv["ranks"]["1"]["trial"]
    assert f"{best['params']['lr']:.4g}" in page


@pytest.mark.parametrize(
    ("which", "heading", "task"),
    [
        ("classification", "breast_cancer.csv → diagnosis", "classification (2 classes: benign, malignant)"),
        ("regression", "synthetic.csv → y", "regression"),
    ],
)
def test_title_block_names_the_data_target_task_and_rows_of_each_split(
    which: str, heading: str, task: str, request: pytest.FixtureRequest
) -> None:
    root: Path = request.getfixturevalue(which)
    page = html.unescape((root / render.REPORT_HTML).read_text())
    assert f"<title>hpopipe report: {heading}</title>" in page and f"<h1>{heading}</h1>" in page
    schema = json.loads((root / "data/prepared/schema.json").read_text())
    train, test = schema["n_rows"]["train"], schema["n_rows"]["test"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    x, y = to_arrays(pd.read_parquet(root / "data/prepared/train.parquet"))
    sweep = split_validation(x, y, task_of(schema, "auto"), params["data"].get("val_size", 0.2), 0)
    fit, val = len(sweep.fit[1]), len(sweep.val[1])  # what the sweep really divided the train rows into
    (line,) = re.findall(r"<p class='sub data'>(.*?)</p>", page)
    assert line == (
        f"Data <code>{params['data']['path']}</code>, target <code>{schema['target']}</code>: {task}. "
        f"{train + test} rows: {train} train (the sweep fits on {fit} and validates on {val}; "
        f"cross-validation and the refit use all {train}), {test} test (scored once, by the refit model "
        "and the baselines)."
    )
    assert page.index("<h1>") < page.index("Study <code>")  # the study comes after the data


def test_every_trials_curve_is_drawn_pruned_ones_included(classification: Path) -> None:
    page = (classification / render.REPORT_HTML).read_text()
    trials = [
        t for t in study_of(classification).get_trials(states=render.CURVE_STATES) if t.intermediate_values
    ]
    drawn = re.findall(r'<g id="curve-(\d+)-(\w+)"', page)
    assert sorted(drawn) == sorted((str(t.number), t.state.name.lower()) for t in trials)


def test_pruned_trials_curves_are_grey_and_the_selected_trial_stands_out() -> None:
    study = optuna.create_study(direction="maximize")
    dists: dict[str, BaseDistribution] = {"x": FloatDistribution(0.0, 1.0)}
    for i in range(4):
        study.add_trial(
            create_trial(
                value=0.5 + i / 10,
                params={"x": i / 10},
                distributions=dists,
                intermediate_values={1: 0.4, 2: 0.5 + i / 10},
            )
        )
    for i in range(3):
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED,
                params={"x": 0.5},
                distributions=dists,
                intermediate_values={1: 0.45 - i / 10},  # two below every complete curve
            )
        )
    fig = plots.intermediate_values(study, selected=3, metric="macro_f1")
    lines = {str(line.get_gid()): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {f"curve-{n}-complete" for n in range(4)} | {f"curve-{n}-pruned" for n in (4, 5, 6)}
    assert {lines[f"curve-{n}-pruned"].get_color() for n in (4, 5, 6)} == {plots.MUTED}
    assert lines["curve-3-complete"].get_color() == plots.HIGHLIGHT
    assert {lines[f"curve-{n}-complete"].get_color() for n in range(3)} == {plots.COLOR}
    legend = fig.axes[0].get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["complete", "pruned", "trial 3 (selected)"]
    assert fig.axes[0].get_ylim() == plots.curve_limits(study) == pytest.approx((0.4 - 0.032, 0.8 + 0.032))
    assert sorted(plots.off_scale(study)) == pytest.approx([0.25, 0.35])  # out of view, named in the caption
    svg = plots.to_svg(fig, "curves")
    assert svg.count('id="curve-') == 7 and "validation macro_f1" in svg


@pytest.mark.parametrize(("which", "metric"), [("classification", "macro_f1"), ("regression", "rmse")])
def test_report_says_in_one_sentence_whether_the_network_beats_gradient_boosting(
    which: str, metric: str, request: pytest.FixtureRequest
) -> None:
    root: Path = request.getfixturevalue(which)
    page = html.unescape((root / render.REPORT_HTML).read_text())
    test = json.loads((root / "metrics/test.json").read_text())
    network, boosted = test[metric], test["baselines"]["hist_gradient_boosting"][metric]
    better = network > boosted if metric == "macro_f1" else network < boosted
    verb = "beats" if better else ("ties with" if network == boosted else "trails")
    (sentence,) = re.findall(r"<p class='verdict'>([^<]*)</p>", page)
    assert sentence.startswith(f"The network {verb} the gradient-boosting baseline")
    assert f"({metric} {network:.4g} against {boosted:.4g})." in sentence
    if verb != "ties with":
        assert f" by {abs(network - boosted):.3g} " in sentence
    # The table shows the network and both baselines side by side, each on the same metrics.
    assert "<th>network</th><th>gradient boosting</th><th>dummy</th>" in page
    assert f"{test['baselines']['dummy'][metric]:.4g}" in page


def test_regression_report_draws_residuals(regression: Path) -> None:
    page = (regression / render.REPORT_HTML).read_text()
    assert page.count("<svg") == SVG_COUNT
    assert "Residuals on the test split" in page and "Confusion matrix" not in page


def test_the_same_outputs_give_the_same_bytes(classification: Path) -> None:
    with inside(classification):
        sources = render.load_sources(load_params().data)
        frames = render.plot_frames(sources, seed=7)
        again = render.render_html(sources, frames, seed=7)
    assert again == (classification / render.REPORT_HTML).read_text()
    for name, frame in frames.items():
        assert frame.to_csv(index=False) == (classification / render.plot_path(name)).read_text()


def test_a_study_grown_since_the_sweep_does_not_change_the_report(
    classification: Path, tmp_path: Path
) -> None:
    """Another DVC experiment may grow the shared study: the report shows the trials hpo exported."""
    copy = tmp_path / "proj"
    shutil.copytree(classification, copy)
    with inside(copy):
        data = load_params().data
        grown = render.open_study("journal", render.load_sources(data).study.study_name)
        first = grown.trials[0]  # a new, better trial with the same distributions
        grown.add_trial(create_trial(params=first.params, distributions=first.distributions, value=0.999))
        sources = render.load_sources(data)
        assert len(sources.study.trials) == len(pd.read_csv(copy / "artifacts/hpo/trials.csv"))
        page = render.render_html(sources, render.plot_frames(sources, seed=7), seed=7)
    assert page == (classification / render.REPORT_HTML).read_text()


def test_missing_inputs_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    data = parse_params(yaml.safe_load(TINY_PARAMS)).data
    with inside(tmp_path), pytest.raises(HpopipeError, match=r"^metrics/hpo\.json: not found"):
        render.load_sources(data)
    for storage, name in (("journal", r"study\.journal"), ("sqlite", r"study\.db")):
        with inside(tmp_path), pytest.raises(HpopipeError, match=rf"{name}: not found"):
            render.open_study(storage, "mlp-0")
    assert not (tmp_path / "artifacts").exists()  # reading never creates a storage


def test_a_study_missing_from_the_storage_is_named(classification: Path) -> None:
    with inside(classification), pytest.raises(HpopipeError, match="no study named 'mlp-nope'"):
        render.open_study("journal", "mlp-nope")


# ---------------------------------------------------------------- the stage in the pipeline


def _report_stage() -> dict:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return stages.get("report", SNIPPET["stages"]["report"])


def test_report_stage_depends_on_exactly_the_modules_it_imports() -> None:
    declared = {d for d in _report_stage()["deps"] if d.startswith("src/")}
    assert declared == library_closure(REPO / "stages/report.py")


def test_report_code_is_no_dependency_of_the_sweep_or_cv() -> None:
    for stage in ("hpo", "cv"):
        closure = library_closure(REPO / "stages" / f"{stage}.py")
        assert not {"src/hpopipe/report/render.py", "src/hpopipe/report/plots.py"} & closure


# ---------------------------------------------------------------- in a browser


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={cwd / 'profile'}",
    ]
    proc = subprocess.run(
        [str(CHROMIUM), *flags, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


# Measures every drawn SVG after layout and writes the result into the DOM, which --dump-dom prints.
PROBE = """<pre id="probe"></pre><script>
window.addEventListener("load", () => {
  const sizes = [...document.querySelectorAll("figure svg")].map((svg) => {
    const box = svg.getBoundingClientRect();
    return {width: box.width, height: box.height, shapes: svg.querySelectorAll("path,rect,text,use").length};
  });
  document.getElementById("probe").textContent = JSON.stringify(sizes);
});
</script></body>"""


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs headless Chromium at /usr/bin/chromium (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(classification: Path, tmp_path: Path) -> None:
    page = (classification / render.REPORT_HTML).read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE))
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri(), cwd=tmp_path).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[-2000:]
    sizes = json.loads(found.group(1))
    assert len(sizes) == SVG_COUNT
    for size in sizes:
        assert size["width"] > 200 and size["height"] > 100 and size["shapes"] > 10, size

    shot = tmp_path / "report.png"
    chromium(
        "--window-size=1280,2000",
        f"--screenshot={shot}",
        (classification / render.REPORT_HTML).as_uri(),
        cwd=tmp_path,
    )
    pixels = image.imread(shot)[..., :3]
    drawn = (pixels < 0.95).any(axis=2)  # anything but (near) white
    assert 0.03 < drawn.mean() < 0.9
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50  # colour plots drew


# ---------------------------------------------------------------- with real DVC


def dvc(root: Path, *args: str) -> str:
    proc = subprocess.run(["dvc", *args], cwd=root, env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, env=subprocess_env(), check=True, capture_output=True)


def with_report_stage(root: Path) -> None:
    """Add the report stage and the plots block to the project's dvc.yaml unless it has them."""
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    if "report" not in pipeline["stages"]:
        pipeline["stages"]["report"] = SNIPPET["stages"]["report"]
        pipeline["plots"] = SNIPPET["plots"]
        (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))


@pytest.mark.slow
def test_dvc_repro_plots_show_and_diff(tmp_path: Path) -> None:
    root = make_project(tmp_path, TINY_PARAMS)
    with_report_stage(root)
    out = dvc(root, "repro")
    assert "Running stage 'report'" in out
    assert "up to date" in dvc(root, "status")  # reading the study left the sweep's outputs as they were

    shown = json.loads(dvc(root, "plots", "show", "--json"))
    assert not shown.get("errors"), shown["errors"]
    ids = [next(iter(p)) for p in SNIPPET["plots"]]
    drawn = {name for name in ids if shown["data"].get(name)}
    assert drawn == set(ids) - {"residuals"}  # a header-only file (no regression here) draws nothing

    git(root, "add", "-A")
    git(root, "commit", "-qm", "first run")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["refit"]["epochs"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(root, "repro")
    assert set(re.findall(r"Running stage '(\w+)'", out)) == {"refit", "report", "cleanup"}
    diff = json.loads(dvc(root, "plots", "diff", "HEAD", "--json"))
    assert not diff.get("errors"), diff["errors"]
    confusion = diff["data"]["confusion"][0]
    assert set(confusion["revisions"]) == {"HEAD", "workspace"}


def test_the_summary_says_what_a_warm_start_gave() -> None:
    """hpo.warm_start: the report names the trials added from earlier studies and the reused results."""
    from optuna.trial import create_trial

    from hpopipe.report.render import warm_start_note
    from hpopipe.sweep.budget import REUSED_FROM, WARM_STARTED

    cold = optuna.create_study()
    cold.add_trial(create_trial(value=0.5))
    assert warm_start_note(cold) == ""
    warm = optuna.create_study()
    warm.set_user_attr(WARM_STARTED, 4)
    warm.add_trial(create_trial(value=0.5, user_attrs={REUSED_FROM: "old#2"}))
    warm.add_trial(create_trial(value=0.6))
    note = warm_start_note(warm)
    assert "began with 4 finished trials of earlier studies" in note
    assert "1 trials took the result of an identical configuration" in note
