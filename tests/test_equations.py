"""false_equation on steps as real models write them (MATH-style LaTeX and plain text)."""

from __future__ import annotations

import threading

import pytest

from itc.grading.equations import equations, false_equation
from itc.grading.verify import GradingBudget

# Correct steps: none may be called false.
TRUE_STEPS = [
    "$4 + 9 = 13$",
    "20 - 6 = 14 pens",
    "$5 \\times 3 = 15$",
    "a = 1 + 2 = 3",
    "So she has $4 + 9 = 13$ apples left.",
    "First, we compute $12 \\div 4 = 3$.",
    "The total cost is $3 \\cdot 15 = 45$ dollars.",
    "Each box holds 12 / 4 = 3 marbles, so 3 boxes hold 3 * 3 = 9.",
    "$x = \\frac{12}{4} = 3$",
    "$\\frac{3}{4} \\cdot 8 = 6$",
    "$\\dfrac{6}{3}=2$",
    "So $\\frac{1}{2} + \\frac{1}{3} = \\frac{5}{6}$.",
    "$\\frac{1}{3} = 0.33$ (rounded)",
    "$\\sqrt{16} = 4$",
    "$\\sqrt{2} \\cdot \\sqrt{8} = 4$",
    "$2^{10} = 1024$",
    "$3^2 + 4^2 = 25 = 5^2$",
    "$(3 + 4)^2 = 49$",
    "$2(3+4) = 14$",
    "$-5 + 8 = 3$",
    "$5 - 8 = -3$",
    "The area is $\\pi \\cdot 3^2 = 9\\pi \\approx 28.27$.",
    "$\\pi \\times 4 = 12.57$",
    "$0.75 = 75\\%$",
    "1,000 + 250 = 1,250",
    "$1{,}000 \\times 3 = 3{,}000$",
    "$\\$1.50 \\times 4 = \\$6.00$",
    "$2.5 \\times 4 = 10.0$",
    "4 + 5 = 9.",
    "\\boxed{3+4=7}",
    "(3 + 4 = 7)",
    "Step 1: 6 × 7 = 42",
    "Step 2: 48 ÷ 6 = 8",
    "The product is 3 · 4 = 12.",
    "$2x + 3 = 11$, so $2x = 8$ and $x = 4$.",
    "$f(2) = 4 + 1 = 5$",
    "$x^2 = 9$ gives $x = 3$.",
    "20% of 50 = 10",
    "5 cm + 3 cm = 8 cm",
    "Then 3 x 4 = 12",
    "$\\binom{5}{2} = 10$",
    "$\\sin 30^\\circ = 0.5$",
    "$3! = 6$",
    "$a + b = 7$ and $a - b = 1$",
    "$y = 2x + 1 = 2 \\cdot 3 + 1 = 7$",
    "$5 + \\$3 = 8$",
    "If $n = 4$, then $n^2 = 16$.",
    "$\\left(\\frac{1}{2}\\right)^2 = \\frac{1}{4}$",
    "$\\frac{10}{4} = 2.5$",
    "The remainder is $17 - 3 \\cdot 5 = 2$.",
    "There are $\\frac{8 \\cdot 7}{2} = 28$ handshakes.",
    "$a_1 = 3$ and $a_2 = 3 + 2 = 5$",
    "$x \\leq 5$ and $2 + 2 = 4$",
    "$3 \\neq 4$, and $10 \\geq 3$",
    "$12 = 2^2 \\cdot 3$",
    "$\\frac{2}{3} = 0.667$",
    "$100 \\div 3 = 33.33$",
    "$3.14 \\times 2 = 6.28$",
    "$2^{-1} = 0.5$",
    "$\\sqrt[3]{27} = 3$",
    "The ratio is 3:4 = 0.75.",
    "$\\frac{7}{2} = 3\\frac{1}{2}$",
    "$3\\frac{1}{2} = \\frac{7}{2}$",
    "7/2 = 3 1/2 cups",
    "She has 3 1/2 = 3.5 cups",
    "$2 \\frac{1}{4} = 2.25$",
]

# Wrong steps: each states a numeric equation that does not hold.
FALSE_STEPS = [
    "$4 + 9 = 14$",
    "20 - 6 = 15 pens",
    "$5 \\times 3 = 16$",
    "a = 1 + 2 = 4",
    "So she has $4 + 9 = 12$ apples left.",
    "$x = \\frac{12}{4} = 4$",
    "$\\frac{3}{4} \\cdot 8 = 5$",
    "$\\sqrt{16} = 5$",
    "$2^{10} = 1000$",
    "$3^2 + 4^2 = 24$",
    "$3^2 + 4^2 = 25 = 6^2$",
    "1,000 + 250 = 1,350",
    "$\\frac{2}{3} = 0.6$",
    "Step 1: 6 × 7 = 48",
    "The remainder is $17 - 3 \\cdot 5 = 3$.",
    "$\\$1.50 \\times 4 = \\$7.00$",
    "B-3 12-3=8",
    "\\boxed{3+4=8}",
    "Each box holds 12 / 4 = 3 marbles, so 3 boxes hold $3 * 3 = 10$.",
    "$y = 2x + 1 = 2 \\cdot 3 + 1 = 8$",
]


@pytest.mark.parametrize("step", TRUE_STEPS)
def test_correct_steps_are_never_called_false(step):
    assert not false_equation(step)


@pytest.mark.parametrize("step", FALSE_STEPS)
def test_false_equations_are_found(step):
    assert false_equation(step)


def test_sides_of_chains_and_spaced_expressions():
    assert equations("$a = 1 + 2 = 3$") == [("1 + 2", "3")]
    assert equations("$3^2 + 4^2 = 25 = 5^2$") == [("3^2 + 4^2", "25"), ("25", "5^2")]
    assert equations("20 - 6 = 14 pens") == [("20 - 6", "14")]
    assert equations("$\\boxed{13}$ since 4 + 9 = \\boxed{13}") == [("4 + 9", "13")]
    # not whole sides: a unit, an operator word, a function, a variable next to a number
    assert equations("5 cm + 3 cm = 8 cm") == equations("20% of 50 = 10") == []
    assert equations("$f(2) = 4$") == equations("$2x = 10$") == equations("$3 = 2x$") == []


def test_a_huge_power_is_not_judged():
    assert not false_equation("$10^{10^{10}} = 5$")


def test_sides_are_parsed_under_the_budget_off_the_main_thread():
    """Off the main thread math-verify runs in a worker process, bounded by the budget; a
    spent budget judges nothing and says so."""
    found = []
    worker = threading.Thread(target=lambda: found.append(false_equation("$\\sqrt{16} = 5$", GradingBudget(30))))
    worker.start()
    worker.join()
    assert found == [True]
    spent = GradingBudget(0)
    assert not false_equation("$\\sqrt{16} = 5$", spent) and spent.exhausted
