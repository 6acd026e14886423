"""The embedded world: a synthetic step-by-step math task and its tiny models."""

from itc.toy.task import LEVELS, STEP_DELIMITER, ToyProblem, generate, parse_problem, step_labels

__all__ = ["LEVELS", "STEP_DELIMITER", "ToyProblem", "generate", "parse_problem", "step_labels"]
