"""The ``--engine ray`` options of ``geoguess scan``, as one bundle.

Not a command module. Ray is imported only when ``--engine ray`` is chosen, by
:mod:`geoguess.ray_scan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from ..reporting import Reporter
from .common import ModelOptions, _note

if TYPE_CHECKING:
    from ..ray_scan import RayScan

_PANEL = "Ray (scans beyond one machine)"

EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="local (this process) or ray (an actor pool on Ray Data, local or a "
        "cluster; pip install 'geoguess\\[ray]').",
        rich_help_panel=_PANEL,
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="With --engine ray: the cluster (auto, ray://head:10001) "
        "\\[default: a local Ray on this machine's cores].",
        show_default=False,
        rich_help_panel=_PANEL,
    ),
]
RayWorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--ray-workers",
        min=1,
        help="With --engine ray: actors, each with its own model \\[default: what the "
        "cluster's CPUs or GPUs hold].",
        show_default=False,
        rich_help_panel=_PANEL,
    ),
]
GpusPerWorkerOpt = Annotated[
    float,
    typer.Option(
        "--gpus-per-worker",
        min=0,
        help="With --engine ray: GPUs per actor (CUDA, fp16, batches of 64); 0: CPUs.",
        rich_help_panel=_PANEL,
    ),
]


@dataclass(frozen=True)
class RayOptions:
    """``--engine`` and the Ray settings that go with ``--engine ray``."""

    engine: EngineOpt = "local"
    ray_address: RayAddressOpt = None
    ray_workers: RayWorkersOpt = None
    gpus_per_worker: GpusPerWorkerOpt = 0

    def check(self, model_options: ModelOptions) -> None:
        """Usage errors, before anything loads: Ray settings without ``--engine ray``, an
        unknown engine, or a ``--device`` that contradicts ``--gpus-per-worker``."""
        from ..errors import UsageError

        if self.engine == "local":
            if self.ray_address is not None or self.ray_workers is not None or self.gpus_per_worker:
                raise UsageError(
                    "--ray-address, --ray-workers and --gpus-per-worker go with --engine ray"
                )
            return
        if self.engine != "ray":
            raise UsageError(f"unknown engine {self.engine!r} (choose local or ray)")
        device = model_options.device
        if (device == "cuda" and not self.gpus_per_worker) or (
            device == "cpu" and self.gpus_per_worker
        ):
            raise UsageError(
                "with --engine ray, --gpus-per-worker chooses the device (--device auto)"
            )

    def open(self, model_options: ModelOptions, *, quiet: bool = False) -> RayScan | None:
        """A started :class:`~geoguess.ray_scan.RayScan` (Ray up, the workers' model set
        found) for ``--engine ray``; None for the local engine."""
        self.check(model_options)
        if self.engine == "local":
            return None
        from ..ray_scan import RayScan, WorkerOptions, driver_env

        load = model_options.loader_kwargs()
        del load["device"]  # the workers' device follows --gpus-per-worker
        worker = WorkerOptions(
            model=model_options.model,
            gpus_per_worker=self.gpus_per_worker,
            env=driver_env(),
            **load,
        )
        geo = RayScan(
            worker,
            address=self.ray_address,
            workers=self.ray_workers,
            reporter=Reporter() if quiet else _NoteReporter(),
        )
        if geo.random_weights:
            _note(
                f"warning: model set {geo.name!r} has random backbone weights (built for "
                "tests and benchmarks): its answers are not geolocations"
            )
        return geo


class _NoteReporter(Reporter):
    """Ray's start-up messages as notes on stderr."""

    def message(self, text: str) -> None:
        _note(text)
