"""``itc-verifiers``: majority, ORM and PRM (each aggregation) and PRM-weighted majority on
the same samples, for N = 1, 2, 4, ... (``evals/verifiers.py``).

    itc-verifiers                                  # toy policy, prm=toy vs toy-orm, N up to 64
    itc-verifiers --n 256 --out runs/verifiers256
    itc-verifiers --n 16 dataset.limit=50          # any itc-run override after the options
    itc-verifiers --orm toy-orm prm=qwen2.5-math-prm-7b policy=qwen2.5-math-1.5b dataset=math500

Samples once (an itc-run majority run at N with the PRM scoring every sample, resumable, in
OUT/samples), scores the same samples with the ORM, and writes verifiers.json, verifiers.md
(the table with 95% intervals and the paired PRM-minus-ORM headline at the largest N) and
verifiers.png to OUT, and a results-log entry. ``itc-curves`` embeds the comparison in the
report of any folder above OUT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from itc.cli.errors import cli_errors, pop_debug_flag
from itc.cli.lifecycle import command_process, shutdown_engines

PROG = "itc-verifiers"


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_module

    import itc.run_dir  # noqa: F401 - the run folder's resolvers

    with initialize_config_module(config_module="configs", version_base="1.3"):
        return compose(config_name="run", overrides=overrides)


def _whole_prefills(cfg) -> None:
    """Ask a vLLM policy for whole prefills unless the command line says otherwise. Its
    many seeded samples per call overflow the scheduler's token budget, a prompt is then
    prefilled in chunks, and vLLM's CPU build fails a seeded request whose chunk it
    discards ("CPU Generator does not use offset"): seen at N=64 on the toy policy. A
    serving setting: the samples and the run folder are the same."""
    from omegaconf import OmegaConf, open_dict

    if cfg.policy.get("backend") != "vllm":
        return
    kwargs = OmegaConf.select(cfg, "policy.vllm.engine_kwargs")
    if kwargs is None or "enable_chunked_prefill" not in kwargs:
        with open_dict(cfg):
            if kwargs is None:
                cfg.policy.vllm.engine_kwargs = {}
            cfg.policy.vllm.engine_kwargs.enable_chunked_prefill = False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64, help="samples per problem (the largest N compared; default 64)")
    parser.add_argument("--out", default=None, help="output folder (default runs/verifiers/<policy>-<dataset>-<prm>-vs-<orm>-n<N>)")
    parser.add_argument("--orm", default="toy-orm", help="the ORM: a prm config group entry (default toy-orm)")
    parser.add_argument("--log", metavar="TITLE", default=None, help="results-log title (default: generated)")
    parser.add_argument("--no-log", action="store_true", help="write no results-log entry")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("overrides", nargs="*", help="itc-run overrides (prm=toy is the default PRM)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    pop_debug_flag(["", "--debug"] if args.debug else [""])
    with command_process(), cli_errors(PROG):
        _verifiers(args, argv)


def _verifiers(args: argparse.Namespace, argv: list[str] | None) -> None:
    from itc.config_schema import validate_run_config
    from itc.errors import InputError

    prm_given = any(o.split("=", 1)[0].lstrip("+") == "prm" for o in args.overrides)
    fixed = ["strategy=majority", f"n={args.n}", "score_candidates=true"]
    cfg = _compose([*([] if prm_given else ["prm=toy"]), *args.overrides, *fixed])
    if cfg.get("prm") is None:
        raise InputError("the comparison needs a PRM: prm=<name>")
    _whole_prefills(cfg)
    validate_run_config(cfg)
    orm_cfg = _compose([f"prm={args.orm}"]).prm
    out = Path(args.out or f"runs/verifiers/{cfg.policy.name}-{cfg.dataset.name}-{cfg.prm.name}-vs-{orm_cfg.name}-n{args.n}")

    from evals.verifiers import TABLE, run

    run(cfg, out, orm_cfg, release=shutdown_engines)
    text = (out / TABLE).read_text()
    print(text)
    print(f"wrote {out}")
    if not args.no_log:
        from itc.results_log import write_entry

        title = args.log or f"verifiers side by side, {cfg.prm.name} vs {orm_cfg.name}, N up to {args.n}"
        # the plot stays in OUT (run folders are not kept in the repository): named, not embedded
        body = text.replace("# ", "", 1).replace("![verifiers](verifiers.png)", f"Plot: `{out}/verifiers.png`.")
        argv_text = " ".join(sys.argv[1:] if argv is None else argv)
        print(f"logged {write_entry(title, body, command=f'{PROG} {argv_text}')}")


if __name__ == "__main__":
    main()
