"""Strategies that turn test-time compute into accuracy (``strategy=<name>`` in itc-run)."""

from strategies.base import Strategy, make_candidate

__all__ = ["Strategy", "make_candidate"]


def build_strategy(cfg) -> Strategy:
    """Instantiate a ``strategy`` config group entry (its ``name`` key is descriptive only)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("name", None)
    return instantiate(params)


__all__ += ["build_strategy"]
