"""Hydra configs, shipped as a package so installed entry points find them (pkg://configs)."""

# Composing these configs needs the ${itc_cache:...} resolver; Hydra imports this package first.
import itc.cache  # noqa: E402,F401
