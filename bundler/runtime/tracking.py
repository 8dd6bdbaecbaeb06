"""Experiment trackers: metrics.jsonl's lines also sent to MLflow or W&B when `[tracking]` asks.

Off by default and never required: the tracker's library is imported only when configured, and a
configured one that is missing stops the run before training (exit 3). A tracker only observes: it
is started before the seeds are set, so whatever it does to global RNG state is overwritten, and
a failure while logging is reported once on stderr and never stops the run.

Credentials are never read or written here: MLflow and W&B read their tokens from the environment
(TRACKER_ENV) at the moment they use them.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .errors import RecipeInputError

BACKENDS = ("none", "mlflow", "wandb")
# What the runners pass through to the runtime when set (tokens included: read, never stored).
TRACKER_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "WANDB_API_KEY",
    "WANDB_MODE",
    "WANDB_DIR",
    "WANDB_BASE_URL",
    "WANDB_ENTITY",
)
STEP_KEYS = ("loss", "grad_norm", "lr", "tokens", "step_time")


def metric_items(line: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl line as tracker metrics: step keys as they are, eval keys as '<split>/<key>'."""
    split = line.get("split")
    return {
        (f"{split}/{key}" if split else key): float(value)
        for key, value in sorted(line.items())
        if key not in ("step", "split") and isinstance(value, (int, float))
    }


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in sorted(config.items()):
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


class Tracker:
    """No tracker: every call does nothing."""

    backend = "none"

    def log(self, line: dict[str, Any]) -> None:
        """Send one metrics.jsonl line."""

    def finish(self, results: dict[str, Any]) -> None:
        """Send the final evaluation and the adapter hashes, and close the run."""


class _Guarded(Tracker):
    """A real tracker: a logging failure is reported once and turns the tracker off."""

    def __init__(self) -> None:
        self._broken = False
        atexit.register(self._abandon)

    def _guard(self, action: str, call: Any, *args: Any) -> None:
        if self._broken:
            return
        try:
            call(*args)
        except Exception as exc:  # noqa: BLE001 - a tracker outage must never end a training run
            self._broken = True
            print(
                f"warning: {self.backend} tracking stopped ({action} failed: {exc}); "
                "training goes on and metrics.jsonl stays complete",
                file=sys.stderr,
                flush=True,
            )

    def log(self, line: dict[str, Any]) -> None:
        self._guard("log", self._log, line)

    def finish(self, results: dict[str, Any]) -> None:
        atexit.unregister(self._abandon)
        self._guard("finish", self._finish, results)

    def _abandon(self) -> None:
        """At exit without finish() (a crash): close the run as failed."""
        self._guard("close", self._close_failed)

    def _log(self, line: dict[str, Any]) -> None:
        raise NotImplementedError

    def _finish(self, results: dict[str, Any]) -> None:
        raise NotImplementedError

    def _close_failed(self) -> None:
        raise NotImplementedError


def _final_metrics(results: dict[str, Any]) -> dict[str, float]:
    evaluation = results.get("eval") or {}
    return {f"final/{k}": float(v) for k, v in sorted(evaluation.items()) if isinstance(v, (int, float))}


def _final_tags(results: dict[str, Any]) -> dict[str, str]:
    keys = ("adapter_sha256", "adapter_tensor_sha256", "quantization", "precision", "device")
    return {f"bundler.{k}": str(results[k]) for k in keys if k in results}


class MlflowTracker(_Guarded):
    backend = "mlflow"

    def __init__(self, uri: str, project: str, run_name: str | None, params: dict[str, str]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        if uri.startswith("file:"):
            # MLflow 3.x raises for file stores unless this is set: the store is in maintenance mode
            # but still works, and it is the one local store mlflow-skinny can write (no SQLAlchemy).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        # The client, not mlflow's fluent API: no process-wide active run, no global tracking URI.
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(project)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        # MLflow caps a param value at 6000 characters; config values are far shorter.
        params_list = [Param(k, v[:6000]) for k, v in params.items()]
        for start in range(0, len(params_list), 100):  # log_batch takes at most 100 params
            self.client.log_batch(self.run_id, params=params_list[start : start + 100])
        super().__init__()

    def _send(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, value, now, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def _log(self, line: dict[str, Any]) -> None:
        self._send(metric_items(line), int(line.get("step", 0)))

    def _finish(self, results: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._send(_final_metrics(results), int(results.get("steps") or 0))
        tags = [RunTag(k, v) for k, v in _final_tags(results).items()]
        self.client.log_batch(self.run_id, tags=tags)
        self.client.set_terminated(self.run_id, "FINISHED")

    def _close_failed(self) -> None:
        self.client.set_terminated(self.run_id, "FAILED")


class WandbTracker(_Guarded):
    backend = "wandb"

    def __init__(self, directory: str | None, project: str, run_name: str | None, params: dict[str, str]) -> None:
        import wandb

        # Offline unless WANDB_MODE says otherwise: containers run with --network none; an offline
        # run is uploaded later with `wandb sync <dir>`.
        mode = os.environ.get("WANDB_MODE") or "offline"
        self.run = wandb.init(
            project=project,
            name=run_name,
            dir=directory,
            mode=mode,  # type: ignore[arg-type]
            config=params,
            reinit="create_new",
            # No console capture: stdout carries the BUNDLER_EVENT lines the runners parse.
            settings=wandb.Settings(console="off"),
        )
        super().__init__()

    def _log(self, line: dict[str, Any]) -> None:
        self.run.log(metric_items(line), step=int(line.get("step", 0)))

    def _finish(self, results: dict[str, Any]) -> None:
        self.run.summary.update({**_final_metrics(results), **_final_tags(results)})
        self.run.finish()

    def _close_failed(self) -> None:
        self.run.finish(exit_code=1)


def _local_uri(uri: str) -> str:
    """A path (absolute or ~/...) as a file: URI; URIs (file:, sqlite:) pass unchanged."""
    if "://" in uri or uri.startswith("file:"):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def _missing_library(backend: str) -> RecipeInputError:
    return RecipeInputError(
        f"tracking.backend = {backend!r} but {backend} is not installed in the run's environment",
        f'add {backend} to requirements.in and run `bundler lock`, or set tracking.backend = "none"',
        kind="config",
    )


def start_tracker(config: dict[str, Any]) -> Tracker:
    """The tracker `[tracking]` asks for (a do-nothing one by default and on ranks other than 0)."""
    # bundler passes [tracking] at run time (BUNDLER_TRACKING): where metrics are mirrored to is not part of
    # the recipe, so it never changes the bundle ID and no host path enters it. A recipe may still carry one.
    passed = os.environ.get("BUNDLER_TRACKING")
    tracking = json.loads(passed) if passed else (config.get("tracking") or {})
    backend = tracking.get("backend", "none")
    if backend == "none" or os.environ.get("RANK", "0") != "0":
        return Tracker()
    if backend not in BACKENDS:
        raise RecipeInputError(
            f"tracking.backend = {backend!r} is not known to this runtime",
            f"choose one of {', '.join(BACKENDS)}",
            kind="config",
        )
    project = tracking.get("project") or config.get("project", {}).get("name") or "bundler"
    run_name = tracking.get("run_name")
    params = _flat({k: v for k, v in config.items() if k != "tracking"})
    uri = tracking.get("tracking_uri")
    if backend == "mlflow":
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise _missing_library("mlflow") from None
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise RecipeInputError(
                "tracking.backend = 'mlflow' needs a tracking store",
                'set tracking.tracking_uri = "~/mlruns" (a local path or file: URI), '
                "or MLFLOW_TRACKING_URI in the environment",
                kind="config",
            )
        return _started("mlflow", lambda: MlflowTracker(_local_uri(uri), project, run_name, params))
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise _missing_library("wandb") from None
    # For W&B, tracking_uri is the directory its offline run files go to.
    directory = str(Path(uri.removeprefix("file://").removeprefix("file:")).expanduser()) if uri else None
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
    return _started("wandb", lambda: WandbTracker(directory, project, run_name, params))


def _started(backend: str, make: Any) -> Tracker:
    try:
        return make()
    except RecipeInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any library failure at start is a setup problem
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeInputError(
            f"{backend} tracking could not start: {first[:300]}",
            'check [tracking] tracking_uri and the tracker\'s environment variables, or set tracking.backend = "none"',
            kind="config",
        ) from None
