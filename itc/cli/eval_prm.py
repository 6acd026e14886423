"""``itc-eval-prm``: evaluate a PRM (a Hydra app, ``configs/eval_prm.yaml``).

    itc-eval-prm                       # the toy PRM on held-out embedded-world solutions
    itc-eval-prm prm=toy-orm           # the ORM baseline, same samples (same seed)
    itc-eval-prm --help

Prints a summary and writes the full JSON report to ``output``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from itc.cli.errors import cli_errors, run_hydra_app
from itc.cli.lifecycle import command_process
from itc.config_schema import ConfigError, validate_groups

PROG = "itc-eval-prm"

log = logging.getLogger("itc.eval_prm")

FILE_FORMATS = ("prm800k", "processbench", "math_shepherd", "step_labelled")


def load_file(spec: dict, neutral: str):
    from prm.data import load_math_shepherd, load_processbench, load_prm800k, read_jsonl

    fmt, path = spec.get("format"), spec.get("path")
    if fmt not in FILE_FORMATS or not path:
        raise ConfigError(
            f"each entry of files needs a path and a format in {', '.join(FILE_FORMATS)}; got {spec}"
        )
    if fmt == "prm800k":
        return list(load_prm800k(path, neutral=neutral))
    if fmt == "processbench":
        return list(load_processbench(path))
    if fmt == "math_shepherd":
        return list(load_math_shepherd(path))
    return list(read_jsonl(path))


def run(cfg: DictConfig) -> dict:
    from evals.prm_eval import clean, file_report, toy_report
    from itc.policy import build_policy
    from itc.results import write_json_atomic
    from prm.scoring import build_prm

    c = OmegaConf.to_container(cfg, resolve=True)
    files = [load_file(spec, c["prm800k_neutral"]) for spec in c["files"]]  # fail fast on bad input
    prm = build_prm(cfg.prm, seed=cfg.seed)
    report: dict = {"prm": c["prm"]["name"], "model": prm_model_path(prm, c), "aggregation": prm.aggregation}
    if c["toy"]["enabled"]:
        t = c["toy"]
        policy = build_policy(cfg.policy, seed=cfg.seed)
        report["toy"] = toy_report(
            policy, prm, t["num_problems"], t["calibration_problems"], t["samples_per_problem"],
            t["calibration_samples"], t["ns"], t["levels"], cfg.seed,
        )
    lc = c.get("long_chains") or {}
    if lc.get("enabled"):
        from prm.evaluation import toy_gate_report

        report["long_chains"] = {
            str(n): toy_gate_report(prm, lc["num_problems"], cfg.seed, long_chain_steps=n) for n in lc["lengths"]
        }
    report["files"] = {
        spec["path"]: file_report(prm, records) for spec, records in zip(c["files"], files)
    }
    report["prm_tokens_scored"] = prm.tokens_scored
    report = clean(report)
    write_json_atomic(Path(c["output"]), report)
    if c.get("log_results", True):
        from itc.results_log import write_entry

        entry = write_entry(f"itc-eval-prm {report['prm']}", results_entry(report, c["output"]))
        log.info("results log: %s", entry)
    return report


def results_entry(report: dict, output: str) -> str:
    """The report's headline figures as a results-log body (Markdown)."""
    lines = [
        f"PRM `{report['prm']}` (model `{report['model']}`, aggregation `{report['aggregation']}`); "
        f"full report: `{output}`",
        "",
        "| solutions | first-error F1 | flawed / correct | threshold | step ROC-AUC | test solutions |",
        "|---|---|---|---|---|---|",
    ]
    sections = ([("toy (held out)", report["toy"])] if "toy" in report else []) + list(report["files"].items())
    sections += [(f"long chains, {n} operations", r) for n, r in report.get("long_chains", {}).items()]
    for name, r in sections:
        pb = r["processbench"]
        lines.append(
            f"| {name} | {_f(pb['f1'])} | {_f(pb['accuracy_flawed'])} / {_f(pb['accuracy_correct'])} "
            f"| {_f(pb['threshold'])} | {_f(r['step_roc_auc'])} | {r['test_solutions']} |"
        )
    rows = report.get("toy", {}).get("best_of_n", {})
    if rows:
        keys = list(next(iter(rows.values())))
        lines += [
            "",
            f"Selection over the same samples ({report['toy']['test_problems']} problems):",
            "",
            "| N | " + " | ".join(keys) + " |",
            "|---" * (len(keys) + 1) + "|",
        ]
        lines += [f"| {n} | " + " | ".join(_f(row[k]) for k in keys) + " |" for n, row in rows.items()]
    return "\n".join(lines)


def prm_model_path(prm, c: dict) -> str:
    return str(getattr(prm, "_model_path", None) or c["prm"]["model"])


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def summary_lines(report: dict) -> list[str]:
    lines = []
    sections = ([("toy", report["toy"])] if "toy" in report else []) + list(report["files"].items())
    for name, r in sections:
        pb = r["processbench"]
        lines.append(
            f"{name}: ProcessBench F1 {_f(pb['f1'])} (flawed {_f(pb['accuracy_flawed'])}, "
            f"correct {_f(pb['accuracy_correct'])}, threshold {pb['threshold']}), "
            f"step ROC-AUC {_f(r['step_roc_auc'])}"
        )
    for n, row in report.get("toy", {}).get("best_of_n", {}).items():
        lines.append(f"N={n}: " + ", ".join(f"{k} {_f(v)}" for k, v in row.items()))
    return lines


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="eval_prm")
def _app(cfg: DictConfig) -> None:
    # their settings are many and checked where they are read: a ValueError there is one
    with cli_errors(PROG, also=(ValueError,)):
        validate_groups(cfg, "policy", "prm")  # before any data, engine or model loads
        report = run(cfg)
    for line in summary_lines(report):
        log.info("%s", line)
    log.info("report: %s", cfg.output)
    print(json.dumps({k: v for k, v in report.items() if k != "files"} | {"files": list(report["files"])}))


def main() -> None:
    with command_process():  # engines shut down, then exit 0, 2 or 1
        run_hydra_app(PROG, _app)


if __name__ == "__main__":
    main()
