"""Hydra's Ray launcher (hydra-ray-launcher), with clear errors for a cluster it cannot use.

``configs/hydra/launcher/ray.yaml`` targets :class:`RayLauncher`, which hands the jobs to the
plugin's launcher after joining the cluster itself: an address that does not answer is an
error at once (not minutes of ``ray.init`` retries), the plugin's ``object_store_memory``
default is left out when joining an existing cluster (only a new instance takes it), and a job
that asks for resources no node has is named. A job that fails on Ray ends the sweep with
``itc-run: error: ...``. Nothing here imports Ray until a sweep is launched: Hydra imports
this module on every start, with or without the ``[ray]`` extra.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
_RESOURCES = {"num_cpus": "CPU", "num_gpus": "GPU"}


class RayLauncher(Launcher):
    def __init__(self, ray: DictConfig) -> None:
        self.ray_cfg = ray
        self._setup: dict[str, Any] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self._setup = {"hydra_context": hydra_context, "task_function": task_function, "config": config}

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from itc.cli.launchers import check_launchers

        check_launchers(["hydra/launcher=ray"])  # the plugin and Ray are installed
        import ray
        from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as PluginLauncher

        from itc.cli.launchers import check_reachable, ray_address, unreachable
        from itc.errors import BackendError, InputError

        init: dict[str, Any] = OmegaConf.to_container(self.ray_cfg.init, resolve=True) or {}
        address = ray_address(init.get("address"))
        if not ray.is_initialized():
            check_reachable(address)
            if address is not None:
                init.pop("object_store_memory", None)  # a new instance's setting only
            try:
                ray.init(**init)
            except ConnectionError as e:
                raise InputError(unreachable(address, str(e).splitlines()[0])) from None
        self._check_resources(ray)
        # A Ray worker's working directory is not this one: the sweep folder is made absolute
        # here (the job itself moves to this directory, itc.cli.run, for relative inputs).
        sweep_dir = os.path.abspath(str(self._setup["config"].hydra.sweep.dir))
        quoted = "'" + sweep_dir.replace("\\", "\\\\").replace("'", "\\'") + "'"
        job_overrides = [[*o, f"hydra.sweep.dir={quoted}"] for o in job_overrides]
        plugin = PluginLauncher(ray=self.ray_cfg)
        plugin.setup(**self._setup)
        try:
            return plugin.launch(job_overrides, initial_job_idx)
        except ray.exceptions.RayError as e:
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise BackendError(
                f"a job on Ray failed ({type(e).__name__}: {first}); what it wrote is kept: "
                f"rerun the same command to finish the sweep (itc-sweep-status shows what is left)"
            ) from None

    def _check_resources(self, ray: Any) -> None:
        """Warn about a job asking for more than any node of the cluster has (it would wait
        until such a node joins)."""
        remote = OmegaConf.to_container(self.ray_cfg.remote, resolve=True) or {}
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        for key, resource in _RESOURCES.items():
            want = float(remote.get(key) or 0)
            have = max((float(n.get(resource, 0)) for n in nodes), default=0.0)
            if want > have:
                log.warning(
                    "each job asks for %s=%g (hydra.launcher.ray.remote.%s) but no node of the Ray "
                    "cluster has more than %g %s: jobs wait until such a node joins (on CPUs: "
                    "hydra.launcher.ray.remote.num_gpus=0)", key, want, key, have, resource,
                )
