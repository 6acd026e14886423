"""Evaluations over run outputs: test-time scaling curves and tables."""
