"""Small fakes the tests share: scripted and step-by-step policies, stand-in PRMs, and
candidates and problems made by hand. Strategy and run-loop logic runs on them in
milliseconds; the real components are tested through the session's fixtures (conftest)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from itc.policy.base import Policy, PromptConfig, SamplingConfig, request_seed
from itc.types import Candidate, Completion, Problem


class ScriptedPolicy(Policy):
    """Returns scripted solutions, in turn, to every prompt; records its calls (strategy and
    run-loop logic only). One token per prompt character."""

    name = "fake"
    max_model_len = 10_000

    def __init__(self, texts: Sequence[str] = ()) -> None:
        self.texts = list(texts)
        self.prompt_config = PromptConfig(chat_template=False)
        self.sampling = SamplingConfig()
        self.calls: list[tuple[int, int, float | None]] = []
        self.keys: Sequence[str] | None = None

    @property
    def num_parameters(self) -> int:
        return 1

    def encode_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        return [[0] * len(p) for p in prompts]

    def generate(self, prompts: Sequence[str], n=1, *, temperature=None, max_tokens=None, one_step=False, request_keys=None):
        self.calls.append((len(prompts), n, temperature))
        self.keys = request_keys
        return [[Completion(self.texts[j % len(self.texts)], 5, True, "eos") for j in range(n)] for _ in prompts]


DELIM = "\n\n"
LENGTH = 4  # steps before the answer


class StepPolicy(Policy):
    """A fake policy: each step is "ok k" or, with probability ``p_bad``, "bad k"; after
    LENGTH steps comes \\boxed{7} when every step was ok, else \\boxed{<number of bad steps>}.
    One token per character."""

    name = "steps"
    max_model_len = 10_000

    def __init__(self, p_bad: float = 0.5, seed: int = 0) -> None:
        self.p_bad = p_bad
        self.rng = random.Random(seed)
        self.prompt_config = PromptConfig(chat_template=False, template="{problem}\n\n")
        self.sampling = SamplingConfig()
        self.calls: list[tuple[int, int, bool]] = []

    @property
    def num_parameters(self) -> int:
        return 10

    def encode_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        return [[0] * len(p) for p in prompts]

    def _next(self, steps: list[str], temperature: float | None) -> str:
        if len(steps) >= LENGTH:
            bad = sum(s.startswith("bad") for s in steps)
            return f"\\boxed{{{7 if bad == 0 else bad}}}"
        greedy = temperature == 0.0
        return f"{'bad' if not greedy and self.rng.random() < self.p_bad else 'ok'} {len(steps)}"

    def generate(self, prompts: Sequence[str], n=1, *, temperature=None, max_tokens=None, one_step=False, request_keys=None):
        self.calls.append((len(prompts), n, one_step))
        out = []
        for i, prompt in enumerate(prompts):
            done = [s for s in prompt.split(DELIM)[1:] if s.startswith(("ok", "bad"))]
            comps = []
            for j in range(n):
                if request_keys is not None:  # as the real backends: the request's own seed
                    self.rng = random.Random(request_seed(0, request_keys[i]) + j)
                steps = list(done)
                new = []
                while True:
                    new.append(self._next(steps, temperature))
                    steps.append(new[-1])
                    if one_step or "boxed" in new[-1]:
                        break
                text = DELIM.join(new)
                eos = "boxed" in new[-1]
                comps.append(Completion(text, len(text), eos, "eos" if eos else "step"))
            out.append(comps)
        return out


class FakePRM:
    """A stand-in PRM: each candidate's steps scored by :meth:`step_scores`; one token per step."""

    num_parameters = 1
    aggregation = "min"

    def __init__(self) -> None:
        self.calls = 0

    def step_scores(self, steps: Sequence[str]) -> list[float]:
        raise NotImplementedError

    def aggregate(self, step_scores: Sequence[float]) -> float:
        from prm.scoring import aggregate

        return aggregate(step_scores, self.aggregation)

    def score_with_usage(self, problems, candidates, known=None):
        """As :meth:`prm.scoring.base.PRM.score_with_usage`: the scores after the known ones."""
        self.calls += 1
        known = known or [[0] * len(cands) for cands in candidates]
        scores = [[self.step_scores(s)[k:] for s, k in zip(cands, ks)] for cands, ks in zip(candidates, known)]
        return scores, [sum(len(steps) for steps in cands) for cands in candidates]


class StepPRM(FakePRM):
    """The embedded world's convention: a step scores 0.9 while the solution is on track (no
    "bad" step so far), else 0.1."""

    num_parameters = 3

    @staticmethod
    def on_track(steps):
        return [0.1 if any(s.startswith("bad") for s in steps[: k + 1]) else 0.9 for k in range(len(steps))]

    def step_scores(self, steps: Sequence[str]) -> list[float]:
        return self.on_track(steps)


class LengthPRM(FakePRM):
    """A step scores by its length (the strategies' plumbing is under test)."""

    def step_scores(self, steps: Sequence[str]) -> list[float]:
        return [1 / (1 + len(s)) for s in steps]


def problems(k: int = 3) -> list[Problem]:
    return [Problem(id=f"p{i}", problem=f"problem {i}", answer="7") for i in range(k)]


def accuracy(results) -> float:
    return sum(r.chosen_answer == "7" for r in results) / len(results)


def cand(answer: str | None, scores: list[float] | None = None, finished: bool = True) -> Candidate:
    """A candidate with this answer (and these step scores, one step each)."""
    steps = ["s"] * len(scores or [])
    return Candidate(text="", steps=steps, answer=answer, completion_tokens=1, finished=finished, step_scores=scores)
