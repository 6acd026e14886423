"""Particle filtering over steps (Puri et al. 2025, "A probabilistic inference approach to
inference-time scaling of LLMs"), with particle Gibbs rounds as an option.

N particles per problem are partial solutions. Every iteration extends each live particle of
every problem by one step (one vLLM call), the PRM scores the new steps (one call), and the
live particles are resampled: as many draws as there are live particles, with replacement,
each particle drawn with probability softmax(score / ``resample_temperature``), the score
being the PRM's aggregation of its step scores (``prm.aggregation``, as every search here).

A particle that ended (finished, or dead: an empty step, the token limit, a full context)
is *absorbing*: it keeps its place, never takes part in a draw and is never copied into a
live one, so the live particles are N minus the ended ones. (its_hub's ``ParticleGibbs``
draws all N places from every particle, ended ones included, so an ended particle is
duplicated and crowds the live ones out: its open issue #208.) Particles still open at
``max_steps`` are generated to the end of the solution there. The N ended particles are the
candidates; the shared selection stage chooses among them.

Particle Gibbs (``gibbs_rounds`` R > 1): R rounds of N/R particles each. From the second
round on, one reference particle, drawn from the previous round's particles with the same
softmax weights, keeps its place in every iteration (conditional SMC): at depth d it takes
part in the draws as its first d steps (a live particle drawn from it continues from there)
and is not extended itself. The candidates are every round's particles; the selection
chooses among the last round's (``among``), as its_hub returns the last round's.

One unit of N is one particle (in a round). Draws are seeded per problem from the run's
seed and the problem's id, so resampling does not depend on the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from itc.policy import Policy
from itc.policy.base import request_seed
from itc.types import Problem
from prm.scoring.aggregate import aggregate
from strategies.accounting import Meter
from strategies.base import Found, StrategyConfigError
from strategies.selection import PRMStrategy
from strategies.steps import Partial, extend, score


def resampling_weights(scores: Sequence[float], temperature: float) -> np.ndarray:
    """softmax(score / temperature): each particle's probability in a draw."""
    x = np.asarray(scores, dtype=float) / temperature
    w = np.exp(x - x.max())
    return w / w.sum()


def copy(p: Partial, depth: int | None = None) -> Partial:
    """A live copy of a particle's first ``depth`` steps (all of them by default)."""
    k = len(p.steps) if depth is None else depth
    return Partial(p.owner, list(p.steps[:k]), list(p.step_scores[:k]), p.tokens, meta=dict(p.meta))


def resample(
    population: Sequence[Partial],
    aggregation: str,
    temperature: float,
    rng: np.random.Generator,
    reference: Partial | None = None,
    depth: int = 0,
) -> list[Partial]:
    """The next population of one problem (without the reference, which keeps its own place).

    Ended particles stay as they are; every live one is replaced by a draw from the live
    particles and, while it is still open at this ``depth``, the reference's first ``depth``
    steps, each with probability :func:`resampling_weights` of its aggregated score."""
    ended = [p for p in population if not p.open]
    pool = [p for p in population if p.open]
    if reference is not None and depth < len(reference.steps):
        pool.append(copy(reference, depth))
    slots = len(population) - len(ended)
    if not slots or not pool:
        return ended
    weights = resampling_weights([aggregate(p.step_scores, aggregation) for p in pool], temperature)
    return ended + [copy(pool[k]) for k in rng.choice(len(pool), size=slots, p=weights)]


class ParticleFiltering(PRMStrategy):
    name = "particle_filtering"

    def __init__(
        self,
        n: int = 4,
        resample_temperature: float = 1.0,
        max_steps: int = 40,
        gibbs_rounds: int = 1,
        **settings: Any,
    ) -> None:
        super().__init__(n, **settings)
        if resample_temperature <= 0:
            raise StrategyConfigError(f"resample_temperature must be positive, got {resample_temperature}")
        if max_steps < 1 or gibbs_rounds < 1:
            raise StrategyConfigError(f"max_steps and gibbs_rounds must be at least 1, got {max_steps}, {gibbs_rounds}")
        if gibbs_rounds > 1 and n < 2 * gibbs_rounds:
            raise StrategyConfigError(
                f"particle Gibbs needs at least 2 particles per round: n={n} is less than 2 x gibbs_rounds={gibbs_rounds}"
            )
        self.resample_temperature = resample_temperature
        self.max_steps = max_steps
        self.gibbs_rounds = gibbs_rounds

    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        rngs = [np.random.default_rng(request_seed(policy.seed, f"{p.id}/{self.name}")) for p in problems]
        size = self.n // self.gibbs_rounds
        refs: list[Partial | None] = [None] * len(problems)
        candidates: list[list[Partial]] = [[] for _ in problems]
        last_round: list[list[int]] = [[] for _ in problems]
        steps = [0] * len(problems)
        for r in range(self.gibbs_rounds):
            final = self._round(problems, policy, prm, meter, size, refs, rngs, r, steps)
            for i, particles in enumerate(final):
                last_round[i] = list(range(len(candidates[i]), len(candidates[i]) + len(particles)))
                candidates[i] += particles
                if r == self.gibbs_rounds - 1:
                    continue
                w = resampling_weights(
                    [aggregate(p.step_scores, prm.aggregation) for p in particles], self.resample_temperature
                )
                ref = particles[int(rngs[i].choice(len(particles), p=w))]
                refs[i] = Partial(ref.owner, ref.steps, ref.step_scores, ref.tokens, ref.finished, ref.dead,
                                  {**ref.meta, "reference": True})
        delim = policy.step_delimiter
        return [
            Found(
                [p.to_candidate(delim) for p in cands],
                among=last_round[i] if self.gibbs_rounds > 1 else None,
                meta={"particles": size, "rounds": self.gibbs_rounds, "iterations": steps[i]},
            )
            for i, cands in enumerate(candidates)
        ]

    def _round(
        self,
        problems: Sequence[Problem],
        policy: Policy,
        prm: Any,
        meter: Meter,
        size: int,
        refs: list[Partial | None],
        rngs: list[np.random.Generator],
        r: int,
        steps: list[int],
    ) -> list[list[Partial]]:
        """One round of particle filtering; each problem's ended particles, reference last."""
        s = self.settings
        free = [size - (ref is not None) for ref in refs]
        population = [[Partial(i, meta={"round": r}) for _ in range(free[i])] for i in range(len(problems))]
        for it in range(self.max_steps):
            live = [p for ps in population for p in ps if p.open]
            if not live:
                break
            last = it == self.max_steps - 1  # generate to the end of the solution
            children = extend(meter, policy, problems, live, 1, s.temperature, whole=last)
            new = [kids[0] if kids else parent for parent, kids in zip(live, children)]  # none: it died
            for child, parent in zip(new, live):
                child.meta = parent.meta
            score(meter, prm, problems, new, s.check_equations)
            by_problem: list[list[Partial]] = [[p for p in ps if not p.open] for ps in population]
            for c in new:
                by_problem[c.owner].append(c)
                steps[c.owner] = max(steps[c.owner], it + 1)
            for i, ps in enumerate(by_problem):
                population[i] = resample(ps, prm.aggregation, self.resample_temperature, rngs[i], refs[i], it + 1)
                for p in population[i]:
                    if p.open:  # a copy of the reference's first steps is a particle of this round
                        p.meta.pop("reference", None)
                        p.meta["round"] = r
        return [ps + ([refs[i]] if refs[i] is not None else []) for i, ps in enumerate(population)]
