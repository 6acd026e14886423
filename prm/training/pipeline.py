"""``itc-train-prm`` as a function: the data mix, the model, training and the toy PRM's quality
gate, from one ``configs/train_prm.yaml`` config. The CLI (:mod:`itc.cli.train_prm`) and the
embedded world's PRM (:mod:`prm.toy`, trained on first use) both call
:func:`train_from_config`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from itc.config_schema import ConfigError

log = logging.getLogger("itc.train_prm")


class PRMQualityError(RuntimeError):
    """A trained toy PRM is below its floor (``quality_gate`` in configs/train_prm.yaml)."""


def quality_gate(cfg: DictConfig, checkpoint: str) -> dict | None:
    """The toy PRM checks itself after training: ProcessBench F1 on held-out problems'
    reference and one-step-corrupted solutions (:func:`prm.evaluation.toy_gate_report`, the
    transformers backend); below ``quality_gate.min_f1`` it raises
    :class:`PRMQualityError` naming the figure. Runs for ``objective=prm`` on the embedded
    world's tokenizer only (None otherwise)."""
    gate = cfg.get("quality_gate")
    if not gate or not gate.enabled or cfg.objective != "prm" or cfg.model.tokenizer != "toy":
        return None
    from prm.evaluation import toy_gate_report
    from prm.scoring import build_prm

    prm = build_prm(
        {
            "name": "quality-gate", "backend": "hf", "model": checkpoint, "dtype": "float32",
            "max_model_len": cfg.data.max_length, "aggregation": "min",
            "format": OmegaConf.to_container(cfg.format, resolve=True),
        }
    )
    pb = toy_gate_report(prm, gate.problems)["processbench"]
    result = {
        "metric": f"ProcessBench F1 on {gate.problems} held-out problems' reference and corrupted solutions",
        "f1": round(pb["f1"], 4), "threshold": pb["threshold"], "floor": gate.min_f1,
        "passed": pb["f1"] >= gate.min_f1,
    }
    if not result["passed"]:
        raise PRMQualityError(
            f"the trained PRM failed its quality gate: {result['metric']} is {result['f1']:.3f}, "
            f"below the floor {gate.min_f1} (quality_gate.min_f1); checkpoint {checkpoint}"
        )
    log.info("quality gate passed: %s %.3f (floor %s)", result["metric"], result["f1"], gate.min_f1)
    return result


def train_from_config(cfg: DictConfig, release_engines: bool = True) -> dict:
    """Build the data mix, train, save; returns the report (an existing one if trained).

    ``cfg`` is an ``itc-train-prm`` config (``configs/train_prm.yaml``). With
    ``release_engines`` the process's vLLM engines are shut down once the data is sampled,
    to free their memory and threads for training."""
    from itc.cache import fingerprint
    from itc.policy import build_policy, resolve_model_path
    from itc.policy.vllm_backend import shutdown_engines
    from itc.results import write_json_atomic
    from prm.data.mix import build_mix
    from prm.scoring.formats import build_format
    from prm.toy import changed_recipe_keys, recipe
    from prm.training.examples import step_count_summary
    from prm.training.loop import train
    from prm.training.models import load_tokenizer, make_model

    out = Path(cfg.output_dir)
    report_path = out / "train_report.json"
    c = OmegaConf.to_container(cfg, resolve=True)
    if report_path.exists() and (out / "checkpoint").is_dir() and not cfg.overwrite:
        done = json.loads(report_path.read_text())
        changed = changed_recipe_keys(recipe(done.get("config") or {}), recipe(c))
        if not changed:
            log.info("%s is already trained (overwrite=true retrains)", out / "checkpoint")
            return done
        log.warning(
            "%s was trained with other settings (%s); retraining", out / "checkpoint",
            ", ".join(changed[:6]) + (", ..." if len(changed) > 6 else ""),
        )
    out.mkdir(parents=True, exist_ok=True)
    data_cfg = {
        k: v for k, v in c["data"].items()
        if k not in ("max_length", "cache", "dense_toy_labels", "lm_hint_weight")
    }
    policy_model = resolve_model_path(c["policy"]["model"])
    records, counts = build_mix(
        data_cfg,
        lambda: build_policy(cfg.policy, seed=cfg.seed),
        Path(c["data"]["cache"]),
        policy_key=fingerprint(json.dumps(c["policy"], sort_keys=True), policy_model),
    )
    if release_engines:  # sampling is done: free the engine's memory and threads for training
        shutdown_engines()
    log.info("data mix: %s", counts)
    tokenizer = load_tokenizer(c["model"]["tokenizer"], c["model"]["base"])
    model = make_model(c["model"], tokenizer, cfg.seed, step_tag=c["format"].get("step_tag"))
    hint_weight = float(c["data"].get("lm_hint_weight") or 0.0)
    token_hints = None
    if hint_weight:
        if not c["model"].get("base"):
            raise ConfigError("data.lm_hint_weight needs a base LM (model.base) to read hints from")
        from transformers import AutoModelForCausalLM

        from prm.training.examples import lm_token_probabilities
        from prm.training.models import resolve_base

        base_lm = AutoModelForCausalLM.from_pretrained(
            resolve_base(c["model"]["base"]), trust_remote_code=c["model"].get("trust_remote_code", False)
        )
        token_hints = lm_token_probabilities(base_lm)
    stats = train(
        records,
        model,
        tokenizer,
        build_format(c["format"]),
        out,
        c["training"],
        objective=cfg.objective,
        max_length=c["data"]["max_length"],
        dense_toy_labels=bool(c["data"].get("dense_toy_labels", False)),
        token_hints=token_hints,
        hint_weight=hint_weight,
        run_key=fingerprint(
            json.dumps({k: c[k] for k in ("objective", "model", "format", "data", "training")}, sort_keys=True),
            policy_model,
        ),
    )
    gate = quality_gate(cfg, stats["checkpoint"])
    report = {
        "name": cfg.name,
        "policy_model": policy_model,
        "data": {"counts": counts, **step_count_summary(records)},
        **stats,
        **({"quality_gate": gate} if gate else {}),
        "config": c,
    }
    write_json_atomic(report_path, report)
    return report
