"""prm.toy: the names toy / toy-orm resolve to cached checkpoints, trained where loaded."""

import json
from pathlib import Path


def test_toy_prm_name_resolves_to_the_cache_and_retrains_when_the_policy_or_recipe_changed(
    tmp_path, monkeypatch, toy_policy_path
):
    import itc.toy.build
    import prm.toy as toy
    import prm.training.pipeline

    monkeypatch.setenv("ITC_CACHE_DIR", str(tmp_path))
    # the policy lives in the real cache; only the PRM's cache is redirected
    monkeypatch.setattr(itc.toy.build, "policy_path", lambda progress=True: toy_policy_path)
    monkeypatch.setattr(itc.toy.build, "policy_entry", lambda: toy_policy_path)
    calls = []

    def fake_train(cfg, release_engines=True):
        """Called in this process, with the default config, into the entry's temporary folder."""
        calls.append(cfg)
        assert not release_engines  # the caller's engines are not the training's to stop
        (Path(cfg.output_dir) / "checkpoint").mkdir(parents=True, exist_ok=True)
        return {"policy_model": str(toy_policy_path), "config": toy.default_recipe(cfg.objective)}

    monkeypatch.setattr(prm.training.pipeline, "train_from_config", fake_train)
    final = tmp_path / "prm" / "toy-prm"
    assert toy.resolve_prm_model("toy", train=False) == "toy (untrained)" and not calls  # identity: no training
    path = toy.resolve_prm_model("toy")
    assert path == str(final / "checkpoint") and len(calls) == 1
    assert calls[0].objective == "prm" and calls[0].output_dir == str(tmp_path / "prm" / "toy-prm.tmp")
    report = final / "train_report.json"
    assert json.loads(report.read_text())["checkpoint"] == path  # where it is after the rename
    assert toy.resolve_prm_model("toy") == path and len(calls) == 1  # cached
    assert toy.resolve_prm_model("toy", train=False) == path
    report.write_text(json.dumps({"policy_model": "/some/older/policy", "config": toy.default_recipe("prm")}))
    assert toy.resolve_prm_model("toy", train=False) == "toy (untrained)" and len(calls) == 1
    toy.resolve_prm_model("toy")
    assert len(calls) == 2  # retrained for the current policy
    older = toy.default_recipe("prm")
    older["model"]["lm_verifier"] = False
    older["training"]["max_steps"] = 6000
    older["training"]["disable_tqdm"] = True  # not part of the recipe
    report.write_text(json.dumps({"policy_model": str(toy_policy_path), "config": older}))
    assert toy.changed_recipe_keys(toy.recipe(older), toy.default_recipe("prm")) == [
        "model.lm_verifier", "training.max_steps"]
    toy.resolve_prm_model("toy")
    assert len(calls) == 3  # retrained with today's recipe
    assert toy.resolve_prm_model("/my/prm") == "/my/prm"


def test_the_toy_recipe_includes_the_sampling_policy_but_not_its_engine_settings():
    from prm import toy

    shipped = toy.default_recipe("prm")
    assert shipped["policy"]["model"] == "toy" and shipped["policy"]["backend"] == "hf"  # composed
    other = json.loads(json.dumps(shipped))
    other["policy"]["backend"] = "vllm"  # other samples: another model
    other["policy"]["vllm"] = {"engine_kwargs": {"block_size": 128}}  # engine tuning: the same
    assert toy.changed_recipe_keys(toy.recipe(other), shipped) == ["policy.backend"]


def test_the_toy_recipe_ignores_the_policys_serving_settings():
    """Hydra composes the policy's ``openai`` block (configs/serving) into a training config;
    the shipped recipe, composed by hand, sees only its defaults line. Neither is recipe, so
    a trained toy PRM stays current (else every run would retrain it)."""
    from omegaconf import OmegaConf

    from conftest import compose_app
    from prm import toy

    composed = OmegaConf.to_container(compose_app("train_prm", []), resolve=True)
    assert "openai" in composed["policy"]
    composed["objective"] = "prm"
    assert toy.changed_recipe_keys(toy.recipe(composed), toy.default_recipe("prm")) == []
