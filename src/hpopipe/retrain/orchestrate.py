"""Retraining around DVC: run the stages through DVC, gate the new model, then push and commit.

The Prefect flow (``flows/retrain.py``) and the ``hpopipe retrain`` command both call
:func:`retrain`; they differ only in how one stage is run (a Prefect task with retries and
logs, or a plain call). DVC stays the judge of what is stale: every stage runs as
``dvc repro --single-item <stage>``, and a stage that DVC skips is reported as cached. Nothing
here calls the library behind DVC's back, so ``dvc.lock`` always describes what is on disk.

Parameter overrides are written into ``params.yaml`` (with DVC's own ``--set-param`` code) before
the stages run and are committed together with ``dvc.lock`` and the metrics, so the commit holds
the values the model was trained with.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml

from hpopipe import artifacts
from hpopipe.config import Params, load_params
from hpopipe.errors import HpopipeError, StageError
from hpopipe.metrics import objective_direction

log = logging.getLogger(__name__)

AnyLogger: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]
StageRunner: TypeAlias = Callable[[str], "StageOutcome"]

DEFAULT_MAX_REGRESSION = 0.02
DEFAULT_BRANCH = "retrain"
EXIT_GATE_FAILED = 1  # 2 is taken by user errors (hpopipe.entry)
PARAMS_FILE = "params.yaml"
TEST_METRICS = artifacts.metrics_file("test")
_KILL_GRACE_S = 10.0
# DVC's advice after each stage; the retrain does these itself, so they are noise in its log.
_DVC_HINTS = (
    "To track the changes with git",
    "git add dvc.lock",
    "To enable auto staging",
    "dvc config core.autostage",
    "Use `dvc push`",
)


# ---------------------------------------------------------------- the stages, in pipeline order


def pipeline_stages(root: Path) -> list[str]:
    """The stages of ``dvc.yaml`` in file order, checked to be an order in which they can run.

    Each task runs one stage with ``dvc repro --single-item``, which does not look upstream; a
    stage listed before the one producing its input would silently run on stale input, so that
    order is an error here.
    """
    stages = _read_stages(root / "dvc.yaml")
    producer = {path: name for name, spec in stages.items() for path in _outputs(spec)}
    order = list(stages)
    for position, (name, spec) in enumerate(stages.items()):
        for dep in _paths(spec.get("deps")):
            source = producer.get(dep)
            if source is not None and order.index(source) > position:
                raise HpopipeError(
                    f"dvc.yaml: stage '{name}' is listed before '{source}', which produces its "
                    f"dependency {dep}"
                )
    return order


def _read_stages(path: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HpopipeError(f"{path}: not found (is this a DVC project?)") from None
    except yaml.YAMLError:
        raise HpopipeError(f"{path}: not valid YAML") from None
    stages = raw.get("stages") if isinstance(raw, dict) else None
    if not isinstance(stages, dict) or not stages:
        raise HpopipeError(f"{path}: no stages")
    for name, spec in stages.items():
        if not isinstance(spec, dict) or "cmd" not in spec:
            raise HpopipeError(f"{path}: stage '{name}' has no cmd (foreach/matrix stages are not supported)")
    return stages


def _paths(entries: Any) -> list[str]:
    """Paths of a deps/outs/metrics list, whose items are ``path`` or ``{path: options}``."""
    paths: list[str] = []
    for entry in entries or []:
        paths.extend([entry] if isinstance(entry, str) else list(entry))
    return [os.path.normpath(p) for p in paths]


def _outputs(spec: Mapping[str, Any]) -> list[str]:
    return [p for key in ("outs", "metrics", "plots") for p in _paths(spec.get(key))]


def git_tracked_outputs(root: Path) -> list[str]:
    """Outputs DVC leaves to git (``cache: false``) and git does not ignore: what a retrain commits.

    That is the metrics files and plot data; a ``cache: false`` output that ``.gitignore``
    excludes (the study database: state, not a versioned artifact) stays out of the commit.
    """
    paths: list[str] = []
    for spec in _read_stages(root / "dvc.yaml").values():
        for key in ("outs", "metrics", "plots"):
            for entry in spec.get(key) or []:
                if isinstance(entry, dict):
                    paths.extend(p for p, opts in entry.items() if (opts or {}).get("cache") is False)
    ignored = (
        set(_git(root, "check-ignore", "--", *paths, check=False).stdout.splitlines()) if paths else set()
    )
    return [p for p in paths if p not in ignored]


# ---------------------------------------------------------------- one stage through DVC


@dataclass(frozen=True)
class StageOutcome:
    """What DVC did with one stage: ran it, or skipped it as cached."""

    stage: str
    status: Literal["ran", "cached"]
    seconds: float
    detail: str


def run_stage(
    root: Path, stage: str, *, timeout_s: float | None = None, logger: AnyLogger = log
) -> StageOutcome:
    """Run one stage as ``dvc repro --single-item <stage>``; DVC decides whether it is stale.

    Upstream stages are not looked at (the caller runs them first, in pipeline order), so each
    task's outcome is about its own stage. On a timeout, or when the caller is interrupted, the
    whole process tree (DVC and the stage under it) is stopped.
    """
    started = time.monotonic()
    lines, code = _run_streaming(_dvc("repro", "--single-item", stage), root, stage, logger, timeout_s)
    if code is None:
        raise StageError(f"stage '{stage}': timed out after {timeout_s:g} s and was stopped", retryable=False)
    if code != 0:
        raise _stage_failure(stage, code, lines)
    outcome = _classify(stage, lines, time.monotonic() - started)
    logger.info("stage %s: %s (%.1f s)", stage, outcome.detail, outcome.seconds)
    return outcome


def _classify(stage: str, lines: Sequence[str], seconds: float) -> StageOutcome:
    text = "\n".join(lines)
    if f"Running stage '{stage}'" in text:
        return StageOutcome(stage, "ran", seconds, "ran")
    if f"Stage '{stage}' is cached" in text:
        return StageOutcome(stage, "cached", seconds, "cached (restored from DVC's run-cache)")
    return StageOutcome(stage, "cached", seconds, "cached (up to date)")


def _stage_failure(stage: str, code: int, lines: Sequence[str]) -> StageError:
    """The most useful line of a failed run: the stage's own one-line error, else DVC's."""
    ours = [line for line in lines if line.startswith("hpopipe: error:")]
    dvcs = [line for line in lines if line.startswith("ERROR:")]
    reason = (ours or dvcs or [f"dvc exited with status {code}"])[-1]
    # A stage exits 2 for a user error (bad params, bad data): retrying cannot fix it.
    user_error = bool(ours) or any("exited with 2" in line for line in dvcs)
    return StageError(f"stage '{stage}': {reason}", retryable=not user_error)


def _dvc(*args: str) -> list[str]:
    # The DVC of this interpreter, whatever PATH says (a served flow may not have the venv on it).
    return [sys.executable, "-m", "dvc", *args]


def _child_env() -> dict[str, str]:
    """The stages' ``python`` must be this interpreter, so its directory goes first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _run_streaming(
    cmd: Sequence[str], cwd: Path, prefix: str, logger: AnyLogger, timeout_s: float | None = None
) -> tuple[list[str], int | None]:
    """Run ``cmd``, logging each output line as it comes; ``None`` as the status on a timeout."""
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group, so a timeout can stop the stage under DVC
    )
    lines: list[str] = []
    reader = threading.Thread(target=_pump, args=(proc, lines, prefix, logger), daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop_tree(proc)
        code = None
    except BaseException:  # cancelled (Prefect, Ctrl-C): never leave a stage running unattended
        _stop_tree(proc)
        raise
    reader.join(timeout=_KILL_GRACE_S)
    return lines, code


def _pump(proc: subprocess.Popen[str], lines: list[str], prefix: str, logger: AnyLogger) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip()
        if line:
            lines.append(line)
            if not line.strip().startswith(_DVC_HINTS):
                logger.info("%s | %s", prefix, line)


def _stop_tree(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the process group; after DVC exits (or a grace period) SIGKILL whatever is left.

    The second signal goes to the group even when DVC exited cleanly: the stage under it may
    ignore SIGTERM, and it must not go on writing outputs after the task has given up.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=_KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------- parameter overrides


def override_list(
    n_trials: int | None = None, max_epochs: int | None = None, extra: Sequence[str] = ()
) -> list[str]:
    """Flow/CLI shortcuts as ``dvc exp run --set-param`` strings (``++`` adds a key left to defaults)."""
    shortcuts = {"hpo.n_trials": n_trials, "train.max_epochs": max_epochs}
    return [f"++{key}={value}" for key, value in shortcuts.items() if value is not None] + list(extra)


def apply_overrides(root: Path, overrides: Sequence[str], logger: AnyLogger = log) -> None:
    """Write ``overrides`` into params.yaml, the way ``dvc exp run --set-param`` does.

    Editing the file (instead of passing values past it) is what keeps ``dvc.lock`` honest: DVC
    records the values the stages actually read, and the retrain commit holds the edited
    params.yaml next to that lock file. The result is validated like any params.yaml; on an
    error the file is left as it was.
    """
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides as dvc_apply_overrides

    path = root / PARAMS_FILE
    original = path.read_bytes()
    try:
        dvc_apply_overrides(path, list(overrides))
        load_params(path)
    except InvalidArgumentError as err:
        path.write_bytes(original)
        cause = str(err.__cause__ or err).splitlines()[0]
        raise HpopipeError(f"{PARAMS_FILE}: cannot apply --set {' '.join(overrides)}: {cause}") from None
    except HpopipeError:
        path.write_bytes(original)
        raise
    logger.info("%s: applied %s (committed with the results)", PARAMS_FILE, ", ".join(overrides))


# ---------------------------------------------------------------- the quality gate


@dataclass(frozen=True)
class GateResult:
    """The new test metric against the committed one; ``passed`` decides push and commit."""

    metric: str
    direction: Literal["maximize", "minimize"]
    new: float
    old: float | None
    max_regression: float
    passed: bool
    reason: str


def check_max_regression(value: float) -> float:
    """A threshold is a non-negative number; checked before an hour of training, not after."""
    if not math.isfinite(value) or value < 0:
        raise HpopipeError(f"--max-regression: must be a number >= 0, got {value}")
    return value


def max_regression_for(params: Params, override: float | None) -> float:
    """The gate's threshold: the flag if given, else ``retrain.max_regression`` from params.yaml.

    Read with ``getattr`` so this works before and after the config model grows its ``retrain``
    section; without one the default is :data:`DEFAULT_MAX_REGRESSION`.
    """
    if override is not None:
        return check_max_regression(override)
    section = getattr(params, "retrain", None)
    return check_max_regression(float(getattr(section, "max_regression", DEFAULT_MAX_REGRESSION)))


def quality_gate(
    metric: str, new_metrics: Mapping[str, Any], old_metrics: Mapping[str, Any] | None, max_regression: float
) -> GateResult:
    """Pass unless ``metric`` got worse than ``old_metrics`` by more than ``max_regression``.

    The threshold is absolute, in the metric's units; the direction follows the metric
    (macro_f1 must not drop, log_loss must not rise). Without a committed value (the first
    retrain) there is nothing to regress from, so the gate passes.
    """
    check_max_regression(max_regression)
    direction: Literal["maximize", "minimize"] = objective_direction(metric)
    new = _metric(new_metrics, metric, str(TEST_METRICS))

    def result(old: float | None, passed: bool, reason: str) -> GateResult:
        return GateResult(metric, direction, new, old, max_regression, passed, reason)

    if not math.isfinite(new):
        return result(None, False, f"new {metric} is {new}")
    if old_metrics is None or metric not in old_metrics:
        return result(None, True, f"no committed {metric} to compare with; new {metric} {new:.4f}")
    old = _metric(old_metrics, metric, f"HEAD:{TEST_METRICS}")
    regression = old - new if direction == "maximize" else new - old
    passed = regression <= max_regression
    verdict = "within" if passed else "beyond"
    return result(
        old,
        passed,
        f"{metric} {old:.4f} -> {new:.4f}: regression {max(regression, 0.0):.4f}, "
        f"{verdict} the allowed {max_regression:g}",
    )


def _metric(metrics: Mapping[str, Any], metric: str, source: str) -> float:
    value = metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HpopipeError(f"{source}: no numeric '{metric}' (the metric named by hpo.metric)")
    return float(value)


def committed_metrics(root: Path, rev: str = "HEAD") -> dict[str, Any] | None:
    """``metrics/test.json`` as committed at ``rev``; ``None`` if it was never committed."""
    proc = _git(root, "show", f"{rev}:./{TEST_METRICS.as_posix()}", check=False)
    if proc.returncode != 0:
        if "not a git repository" in proc.stderr:
            raise HpopipeError(f"{root}: not a git repository (retrain compares with and commits to git)")
        return None
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise HpopipeError(f"{rev}:{TEST_METRICS}: not valid JSON") from None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------- remote, push, commit


def default_remote(root: Path) -> str | None:
    """The project's default DVC remote, or ``None`` when there is none (then nothing is pulled or pushed)."""
    proc = subprocess.run(
        _dvc("remote", "default"), cwd=root, env=_child_env(), capture_output=True, text=True, check=False
    )
    name = proc.stdout.strip()
    return name if proc.returncode == 0 and name else None


def dvc_transfer(root: Path, verb: Literal["pull", "push"], logger: AnyLogger = log) -> None:
    """``dvc pull`` / ``dvc push`` of every cached output.

    A pull tolerates files the remote lacks (the first retrain of a project, or a stage that
    never ran), since the stages that follow produce them.
    """
    args = ["pull", "--allow-missing"] if verb == "pull" else ["push"]
    lines, code = _run_streaming(_dvc(*args), root, verb, logger)
    if code != 0:
        errors = [line for line in lines if line.startswith("ERROR:")] or [f"exit status {code}"]
        raise HpopipeError(f"dvc {verb}: {errors[-1]}")


def commit_results(root: Path, branch: str, message: str, paths: Sequence[str]) -> str | None:
    """Commit ``paths`` (and only them) on ``branch``; the new commit's id, or ``None`` if nothing changed.

    ``git checkout -B`` moves the branch to the current commit first, so the result is always
    "this checkout plus one retrain commit", the shape a CI job pushes for review.
    """
    present = [p for p in paths if (root / p).exists()]
    _git(root, "add", "--", *present)
    if _git(root, "diff", "--cached", "--quiet", "--", *present, check=False).returncode == 0:
        return None
    _git(root, "checkout", "-q", "-B", branch)
    _git(root, "commit", "-q", "-m", message, "--", *present)
    return _git(root, "rev-parse", "HEAD").stdout.strip()


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise HpopipeError(f"git {args[0]}: {detail}")
    return proc


# ---------------------------------------------------------------- what the run produced


@dataclass(frozen=True)
class Results:
    """The numbers a retrain summary shows, read from the pipeline's outputs."""

    metric: str
    best_params: dict[str, Any]
    cv_trial: int | None
    cv_mean: float | None
    cv_std: float | None
    cv_folds: int | None
    test: dict[str, float]


def read_results(root: Path) -> Results:
    """Best parameters, the chosen candidate's CV mean and std, and the test metrics."""
    cv = artifacts.read_json(root / artifacts.metrics_file("cv"))
    # The trial select chose: cv's best by mean, unless a multi-objective rule chose another.
    source = (artifacts.read_yaml(root / artifacts.BEST_CONFIG) or {}).get("source") or {}
    best = source.get("trial", cv.get("best_trial"))
    chosen = cv.get("trials", {}).get(str(best), {})
    return Results(
        metric=str(cv.get("metric", "")),
        best_params=artifacts.read_json(root / artifacts.BEST_PARAMS),
        cv_trial=best,
        cv_mean=chosen.get("mean"),
        cv_std=chosen.get("std"),
        cv_folds=cv.get("folds"),
        test=artifacts.read_json(root / TEST_METRICS),
    )


def mlflow_run_ids(root: Path, stages: Sequence[str], since_ms: int) -> dict[str, str]:
    """The top-level MLflow run each stage opened since ``since_ms`` (stages that did not run have none).

    MLflow is a browsable record, so a store that cannot be read costs the summary its run ids,
    not the retrain its result.
    """
    if os.environ.get("HPOPIPE_TRACKING", "").lower() in {"0", "off", "false"} or not stages:
        return {}
    # Imported here and read-only: tracking.py stays the only module that writes to MLflow.
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from hpopipe.tracking import experiment_name

    # Unset, MLflow's store is mlflow.db in the directory the stages ran in (see the README).
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(experiment_name())
        if experiment is None:
            return {}
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"attributes.start_time >= {since_ms}",
            order_by=["attributes.start_time ASC"],
            max_results=5000,
        )
    except MlflowException as err:
        log.warning("MLflow runs not listed (%s)", str(err).splitlines()[0])
        return {}
    return {
        run.info.run_name: run.info.run_id
        for run in runs
        if run.info.run_name in stages and "mlflow.parentRunId" not in run.data.tags
    }


# ---------------------------------------------------------------- the retrain sequence


@dataclass(frozen=True)
class RetrainOptions:
    """How one retrain behaves; the defaults are what the nightly deployment and CI use."""

    overrides: tuple[str, ...] = ()
    max_regression: float | None = None  # None: retrain.max_regression from params.yaml, else 0.02
    branch: str = DEFAULT_BRANCH
    push: bool = True
    commit: bool = True


@dataclass(frozen=True)
class RetrainReport:
    """Everything a retrain did, for the summary and the exit status."""

    stages: list[StageOutcome]
    overrides: tuple[str, ...]
    gate: GateResult
    results: Results
    remote: str | None
    pushed: bool
    branch: str
    commit: str | None
    mlflow_runs: dict[str, str] = field(default_factory=dict)

    @property
    def ran(self) -> list[str]:
        """Stages DVC ran (the others were cached)."""
        return [o.stage for o in self.stages if o.status == "ran"]


def retrain(
    root: Path,
    options: RetrainOptions | None = None,
    stage_runner: StageRunner | None = None,
    logger: AnyLogger = log,
) -> RetrainReport:
    """Pull, apply overrides, reproduce every stage through DVC, gate, then push and commit.

    A failed gate returns a report with ``gate.passed`` False and has pushed and committed
    nothing; the caller turns that into a failed run (exit status, Prefect state). A stage
    that fails raises :class:`StageError`, also before anything is pushed.
    """
    options = options or RetrainOptions()
    root = root.resolve()
    stages = pipeline_stages(root)
    max_regression_for(load_params(root / PARAMS_FILE), options.max_regression)  # fail before training
    remote = default_remote(root)
    if remote is None:
        logger.info("no default DVC remote: nothing is pulled or pushed")
    else:
        dvc_transfer(root, "pull", logger)
    if options.overrides:
        apply_overrides(root, options.overrides, logger)
    since_ms = int(time.time() * 1000)
    runner = stage_runner or functools.partial(_run_stage_positional, root, logger)
    outcomes = [runner(stage) for stage in stages]
    return _gate_and_publish(root, options, outcomes, remote, since_ms, logger)


def _run_stage_positional(root: Path, logger: AnyLogger, stage: str) -> StageOutcome:
    return run_stage(root, stage, logger=logger)


def _gate_and_publish(
    root: Path,
    options: RetrainOptions,
    outcomes: list[StageOutcome],
    remote: str | None,
    since_ms: int,
    logger: AnyLogger,
) -> RetrainReport:
    params = load_params(root / PARAMS_FILE)
    threshold = max_regression_for(params, options.max_regression)
    new = artifacts.read_json(root / TEST_METRICS)
    gate = quality_gate(params.hpo.metric, new, committed_metrics(root), threshold)
    logger.info("quality gate %s: %s", "passed" if gate.passed else "FAILED", gate.reason)
    pushed, commit = False, None
    if gate.passed:
        if remote is not None and options.push:
            dvc_transfer(root, "push", logger)
            pushed = True
        if options.commit:
            paths = [PARAMS_FILE, "dvc.lock", *git_tracked_outputs(root)]
            commit = commit_results(root, options.branch, _commit_message(outcomes, gate, options), paths)
            logger.info("git: %s", f"committed {commit[:12]} on {options.branch}" if commit else "no changes")
    return RetrainReport(
        stages=outcomes,
        overrides=options.overrides,
        gate=gate,
        results=read_results(root),
        remote=remote,
        pushed=pushed,
        branch=options.branch,
        commit=commit,
        mlflow_runs=mlflow_run_ids(root, [o.stage for o in outcomes if o.status == "ran"], since_ms),
    )


def _commit_message(outcomes: Sequence[StageOutcome], gate: GateResult, options: RetrainOptions) -> str:
    ran = [o.stage for o in outcomes if o.status == "ran"]
    title = f"retrain: ran {', '.join(ran) or 'nothing'}; {gate.metric} " + (
        f"{gate.old:.4f} -> {gate.new:.4f}" if gate.old is not None else f"{gate.new:.4f}"
    )
    body = [f"Overrides: {' '.join(options.overrides)}"] if options.overrides else []
    return "\n\n".join([title, *body, "Written by `hpopipe retrain` (params.yaml, dvc.lock and metrics)."])


# ---------------------------------------------------------------- the summary


def summary_markdown(report: RetrainReport) -> str:
    """A markdown summary: what ran and what was cached, results, gate, where things went."""
    sections = [
        "# hpopipe retrain",
        _stage_table(report.stages),
        _overrides_line(report.overrides),
        f"**Quality gate:** {'passed' if report.gate.passed else 'FAILED'}: {report.gate.reason}",
        _results_section(report.results),
        _mlflow_line(report.mlflow_runs),
        _delivery_line(report),
    ]
    return "\n\n".join(sections) + "\n"


def _overrides_line(overrides: Sequence[str]) -> str:
    if not overrides:
        return "**Overrides:** none"
    return "**Overrides:** " + ", ".join(f"`{o}`" for o in overrides) + " (written to params.yaml)"


def _stage_table(outcomes: Sequence[StageOutcome]) -> str:
    rows = [f"| {o.stage} | {o.detail} | {o.seconds:.1f} |" for o in outcomes]
    return "\n".join(["| stage | outcome | seconds |", "|---|---|---:|", *rows])


def _results_section(results: Results) -> str:
    params = [f"| {key} | {_fmt(value)} |" for key, value in sorted(results.best_params.items())]
    test = [f"| {key} | {_fmt(value)} |" for key, value in sorted(results.test.items())]
    cv = (
        f"**CV {results.metric}:** {results.cv_mean:.4f} ± {results.cv_std:.4f} "
        f"({results.cv_folds} folds, trial {results.cv_trial})"
        if results.cv_mean is not None and results.cv_std is not None
        else "**CV:** no result for the chosen trial"
    )
    return "\n\n".join(
        [
            "\n".join(["**Best parameters**", "", "| param | value |", "|---|---|", *params]),
            cv,
            "\n".join(["**Test metrics**", "", "| metric | value |", "|---|---:|", *test]),
        ]
    )


def _mlflow_line(runs: Mapping[str, str]) -> str:
    if not runs:
        return "**MLflow runs:** none this time (tracking off, or no tracked stage ran)"
    return "**MLflow runs:** " + ", ".join(f"{stage} `{run_id}`" for stage, run_id in runs.items())


def _delivery_line(report: RetrainReport) -> str:
    if report.remote is None:
        push = "no DVC remote configured"
    elif report.pushed:
        push = f"pushed to DVC remote `{report.remote}`"
    else:
        push = f"nothing pushed to `{report.remote}`"
    commit = "nothing committed"
    if report.commit:
        commit = f"committed `{report.commit[:12]}` on branch `{report.branch}`"
    return f"**Delivery:** {push}; {commit}"


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
