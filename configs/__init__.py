"""Hydra configs, shipped as a package so installed entry points find them (pkg://configs)."""
