"""``itc-gateway``: the strategies behind an OpenAI-compatible API (a Hydra app).

Examples::

    itc-gateway policy=toy prm=toy                      # 127.0.0.1:8000
    itc-gateway prm=toy strategy=beam_search n=16       # another default strategy
    itc-gateway prm=toy --host 0.0.0.0 --port 9000 --api-key "$KEY"

The policy and the PRM are built as ``itc-run`` builds them (``itc.policy.build_policy``,
``prm.scoring.build_prm``), so any backend their configs name serves here. A client picks
the strategy per request (docs/gateway.md). Bad settings end with
``itc-gateway: error: ...`` and exit status 2, before any engine starts.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

import hydra
from omegaconf import DictConfig

from itc.cli.errors import cli_errors, run_hydra_app
from itc.cli.lifecycle import command_process
from itc.errors import InputError

PROG = "itc-gateway"
API_KEY_ENV = "ITC_GATEWAY_API_KEY"
OPTIONS = {"--host": "gateway.host", "--port": "gateway.port", "--api-key": None}

log = logging.getLogger("itc.gateway")
_api_key: str | None = None  # from --api-key: kept out of the config, which is logged


def pop_options(argv: list[str]) -> dict[str, str]:
    """Take ``--host``, ``--port`` and ``--api-key`` (``--opt value`` or ``--opt=value``) out
    of ``argv``; host and port become Hydra overrides (appended to ``argv``)."""
    found: dict[str, str] = {}
    rest, i = [argv[0]], 1
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in OPTIONS:
            if not eq:
                if i + 1 >= len(argv):
                    raise InputError(f"{name} needs a value")
                value, i = argv[i + 1], i + 1
            found[name] = value
        else:
            rest.append(arg)
        i += 1
    argv[:] = rest + [f"{OPTIONS[k]}={v}" for k, v in found.items() if OPTIONS[k]]
    return found


def check_bind(host: str, port: int, api_key: str | None) -> None:
    """A host other than this machine needs an API key; the address must be free."""
    from itc.cli.gateway_app import LOCAL_HOSTS

    if host not in LOCAL_HOSTS and not api_key:
        raise InputError(
            f"--host {host} is reachable from other machines: give an API key (--api-key or "
            f"${API_KEY_ENV}), which every request must then send"
        )
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host, port), family=family):
            pass
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port} (--host, --port): {e.strerror or e}") from None


def check_config(cfg: DictConfig, has_prm: bool = False) -> None:
    """The settings and the default strategy's own checks (a PRM where it needs one)."""
    from itc.config_schema import validate_gateway_config
    from strategies import build_strategy
    from strategies.base import require_prm

    validate_gateway_config(cfg)
    strategy = build_strategy(cfg.strategy)
    if strategy.needs_prm and not has_prm and cfg.get("prm") is None:
        require_prm(None, strategy.name)


def build_gateway(cfg: DictConfig, api_key: str | None = None, policy=None, prm=None):
    """The gateway of ``cfg``: settings checked first, then the policy and PRM built as
    ``itc-run`` builds them (unless given)."""
    from itc.cli.gateway_app import Gateway
    from itc.policy import build_policy

    check_config(cfg, has_prm=prm is not None)
    if policy is None:
        policy = build_policy(cfg.policy, seed=cfg.seed)
    if prm is None and cfg.get("prm") is not None:
        from prm.scoring import build_prm

        prm = build_prm(cfg.prm, seed=cfg.seed)
    return Gateway(cfg, policy, prm, api_key)


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="gateway")
def _app(cfg: DictConfig) -> None:
    with cli_errors(PROG):
        check_config(cfg)  # before anything is loaded
        api_key = _api_key or os.environ.get(API_KEY_ENV) or None
        host, port = str(cfg.gateway.host), int(cfg.gateway.port)
        check_bind(host, port, api_key)
        gateway = build_gateway(cfg, api_key)
    import uvicorn

    from itc.cli.gateway_app import create_app

    log.info("serving %s on http://%s:%d/v1 (default strategy %s n=%d%s)", cfg.policy.name, host, port,
             cfg.strategy.name, cfg.n, f", PRM {cfg.prm.name}" if cfg.get("prm") is not None else "")
    try:
        uvicorn.run(create_app(gateway), host=host, port=port, log_level="info")
    finally:
        gateway.close()


def main() -> None:
    global _api_key
    with command_process():  # engines shut down, then exit 0, 2 or 1
        with cli_errors(PROG):
            _api_key = pop_options(sys.argv).get("--api-key")
        run_hydra_app(PROG, _app)


if __name__ == "__main__":
    main()
