"""How long grading one problem's answers can take: 16 adversarial answers (power towers,
huge factorials, deeply nested parentheses, megabyte expressions), grouped by equivalence
as majority vote does, then graded against a gold answer as a result record is, each under
its per-problem budget (itc.grading.GradingBudget, 30 s by default).

    python benchmarks/grading_bench.py            # prints the times; --log writes a docs/results entry
"""

from __future__ import annotations

import argparse
import time


def adversarial_answers(n: int = 16) -> list[str]:
    """``n`` distinct answers that make a symbolic parser or comparison work hard."""
    kinds = [
        lambda i: f"{i + 2}^{{{i + 2}^{{{i + 2}^{{{i + 2}}}}}}}",  # power towers
        lambda i: f"({10 ** (6 + i)})!",  # huge factorials
        lambda i: "(" * 5000 + str(i) + ")" * 5000,  # deep nesting
        lambda i: "+".join(f"x^{{{k}}}" for k in range(i, i + 60_000)),  # about 1 MB
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--log", action="store_true", help="write the figures to docs/results/")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.ERROR)
    from itc.grading import GradingBudget, group_by_equivalence

    answers = adversarial_answers(args.n)
    budget = GradingBudget()
    t0 = time.perf_counter()
    classes = group_by_equivalence(answers, budget=budget)
    grouping = time.perf_counter() - t0
    grade_budget = GradingBudget()
    t0 = time.perf_counter()
    correct = [grade_budget.equivalent(a, "42") for a in answers]
    grading = time.perf_counter() - t0
    lines = [
        f"grouping {len(answers)} adversarial answers: {grouping:.1f} s, {len(set(classes))} classes, "
        f"budget exhausted: {budget.exhausted}",
        f"grading them against a gold answer: {grading:.1f} s, {sum(correct)} correct, "
        f"budget exhausted: {grade_budget.exhausted}",
    ]
    print("\n".join(lines))
    if args.log:
        from itc.results_log import write_entry

        print(write_entry("Grading budget: 16 adversarial answers", "\n".join(f"- {x}" for x in lines)))


if __name__ == "__main__":
    main()
