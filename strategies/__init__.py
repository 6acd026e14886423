"""Strategies that turn test-time compute into accuracy (``strategy=<name>`` in itc-run)."""

from itc.candidates import make_candidate
from strategies.base import Strategy

__all__ = ["Strategy", "make_candidate"]


def build_strategy(cfg) -> Strategy:
    """Instantiate a ``strategy`` config group entry (its ``name`` key is descriptive only)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from hydra.errors import InstantiationException

    from strategies.base import StrategyConfigError

    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("name", None)
    try:
        return instantiate(params)
    except InstantiationException as e:  # the strategy's own check, e.g. an unknown selection
        cause = e.__cause__ or e
        raise StrategyConfigError(f"strategy {cfg.get('name')!r}: {cause}") from e


__all__ += ["build_strategy"]
