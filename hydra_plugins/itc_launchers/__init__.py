"""itc's Hydra launchers (found by Hydra's plugin scan of the ``hydra_plugins`` namespace)."""
