"""The labelled answer pairs of the scorer audit, generated from the gold answers' formats.

For each gold answer, rules written from the answer formats of the six evaluation sets (integers,
fractions, decimals, scientific notation, LaTeX expressions, intervals, tuples, sets and lists,
degrees, percent, currency, units, text, matrices, numbers in a base) produce

- equivalent rewritings a model really writes (label 1): `\\dfrac`, a fraction as a slash or as
  its exact decimal, LaTeX spacing, the answer list in another order (only where the problem asks
  for all solutions), the degree sign or unit dropped (only where the gold has one), and so on;
- near misses (label 0): another number in the same format, the wrong sign, the reciprocal, a
  rounded decimal of a fraction that has no exact one, an element dropped from a list, an
  interval's bracket swapped, a tuple's components swapped, another multiple-choice letter.

Each rewriting is put in a whole model response in the two answer formats of the project's prompt
templates (`maspo_verl.data.templates`): `r1` ends with a `\\boxed{}` after the thinking (as
`qwen_math` asks too), `dapo` with an `Answer:` line. Wrapping rules vary the response around the
gold itself (a box inside prose, a display box under "Final Answer", `Answer: $...$`, an earlier
wrong answer that the model then revises, and the reverse).

Minerva's convention is a numeric tolerance (its golds are rounded physics numbers): its near
misses change a number by far more than any rounding (the leading digit, the power of ten), and
no rule relies on the tolerance to call a pair equivalent.

The rules know the gold's text, its benchmark and its problem statement (to tell a "find all"
list from an ordered one), never how any scorer works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Callable, Iterable, Iterator

TOLERANT_BENCHMARKS = ("minerva",)  # golds rounded to significant figures: a tolerance applies
LIST_COMMA_BENCHMARKS = ("olympiadbench",)  # a bare comma separates answers, never digit groups
AIME_BENCHMARKS = ("aime",)  # answers are integers 000-999, often written with three digits

# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Gold:
    benchmark: str
    problem_id: str
    text: str
    problem: str = ""

    @property
    def tolerant(self) -> bool:
        return any(name in self.benchmark.lower() for name in TOLERANT_BENCHMARKS)

    @property
    def comma_lists(self) -> bool:
        return any(name in self.benchmark.lower() for name in LIST_COMMA_BENCHMARKS)

    @property
    def asks_for_all(self) -> bool:
        """The problem asks for every solution (so an answer list is unordered)."""
        return bool(UNORDERED_QUESTION.search(self.problem))


UNORDERED_QUESTION = re.compile(r"(?i)\ball\b|\broots\b|\bsolutions\b")


@dataclass(frozen=True)
class Pair:
    benchmark: str
    problem_id: str
    gold: str
    answer: str  # the final answer as the model writes it
    response: str  # the whole model response holding it
    template: str  # "r1" (boxed) or "dapo" ("Answer:" line)
    rule: str
    label: bool  # True: equivalent to the gold; False: a near miss


# ----------------------------------------------------------------------------- response templates

THINKING = "<think>\nLet me set up the problem and compute carefully.\nThe computation checks out.\n</think>\n\n"
R1_BODY = THINKING + "Working through the problem step by step gives the result.\n\n"
DAPO_BODY = "Let me solve this step by step.\nWorking through the problem gives the result.\n"


def r1_response(answer: str) -> str:
    return R1_BODY + f"Therefore, the final answer is $\\boxed{{{answer}}}$."


def dapo_response(answer: str) -> str:
    return DAPO_BODY + f"Answer: {answer}"


RESPONSE_TEMPLATES: dict[str, Callable[[str], str]] = {"r1": r1_response, "dapo": dapo_response}

# ----------------------------------------------------------------------------- text helpers

OPENERS, CLOSERS = "([{", ")]}"
SPACING_COMMANDS = re.compile(r"\\(?:left|right)(?![a-zA-Z])|\\[,!;:](?![a-zA-Z])|\\q?quad(?![a-zA-Z])")
NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def depth_profile(text: str) -> list[int]:
    """Bracket depth before each character; `\\{`, `\\}`, `\\lfloor` ... count as brackets."""
    depths, depth, index = [], 0, 0
    while index < len(text):
        for word, change in (("\\lfloor", 1), ("\\lceil", 1), ("\\rfloor", -1), ("\\rceil", -1)):
            if text.startswith(word, index):
                depths.extend([depth] * len(word))
                depth += change
                index += len(word)
                break
        else:
            depths.append(depth)
            if text[index] in OPENERS:
                depth += 1
            elif text[index] in CLOSERS:
                depth -= 1
            index += 1
    return depths


def split_top(text: str, separator: str = ",") -> list[str]:
    """Split at separators outside any bracket: `(1,2),(3,4)` -> 2 items, `[0,1)` -> 1 item."""
    depths = depth_profile(text)
    items, start = [], 0
    for index, char in enumerate(text):
        if char == separator and depths[index] == 0:
            items.append(text[start:index])
            start = index + 1
    items.append(text[start:])
    return [item.strip() for item in items]


def compact(text: str) -> str:
    """No `\\left`/`\\right`, thin spaces or blanks, except a blank that ends a command word."""
    text = SPACING_COMMANDS.sub("", text)
    out = []
    for index, char in enumerate(text):
        if not char.isspace():
            out.append(char)
            continue
        before = "".join(out)
        after = text[index + 1 : index + 2]
        if re.search(r"\\[a-zA-Z]+$", before) and after.isalpha() and not out[-1].isspace():
            out.append(" ")  # `\cot x` keeps its blank
    return "".join(out)


def spaced(text: str) -> str:
    """Blanks after commas and around `=` and binary `+`/`-`, as many models write.

    A comma before three digits stays tight: `58,500` is one number, `58, 500` reads as two.
    """
    text = compact(text)
    text = re.sub(r",(?=\S)(?!\d{3}(?!\d))", ", ", text)
    text = re.sub(r"\s*=\s*", " = ", text)
    return re.sub(r"(?<=[\w})\]])(?<!\d[eE])\s*([+-])\s*(?=[\w\\({])", r" \1 ", text)


PROSE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}\s+[a-zA-Z]{2,}")
LATEX_GROUP = re.compile(r"\\(?:text|textbf|mbox|mathrm|operatorname)\s*\{[^{}]*\}|\\[a-zA-Z]+")


def is_prose(text: str) -> bool:
    """Words outside `\\text{}` (`f(x)=ax+b, where b is an arbitrary integer`): blanks and commas are prose."""
    return bool(PROSE.search(LATEX_GROUP.sub(" ", text)))


def brace_shorthand(text: str) -> str:
    """`\\frac 34` -> `\\frac{3}{4}`, `\\frac9{19}` -> `\\frac{9}{19}`, `\\sqrt2` -> `\\sqrt{2}`."""
    text = re.sub(r"\\([dt]?frac)\s*(\d)\s*(\d)", r"\\\1{\2}{\3}", text)
    text = re.sub(r"\\([dt]?frac)\s*(\d)\s*\{", r"\\\1{\2}{", text)
    text = re.sub(r"\\([dt]?frac)\s*(\{\w+\})\s*(\d)", r"\\\1\2{\3}", text)
    return re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", text)


def is_wrapped(text: str, opener: str, closer: str) -> bool:
    """`text` is one bracket pair around everything (`(1,2)`, not `(1,2),(3,4)`)."""
    if not (text.startswith(opener) and text.endswith(closer)) or len(text) < 2:
        return False
    depths = depth_profile(text)
    return all(depth > 0 for depth in depths[1:])


# ----------------------------------------------------------------------------- numbers

INTEGER = re.compile(r"-?\d+")
DECIMAL = re.compile(r"-?(?:\d+\.\d*|\.\d+)")
SCIENTIFIC = re.compile(r"(-?\d+(?:\.\d+)?)e([-+]?\d+)")
GROUPED = re.compile(r"-?\d{1,3}(?:,(?:\\!)?\s*\d{3})+")
FRACTION = re.compile(r"(-?)\\[dt]?frac\s*(?:\{(\d+)\}|(\d))\s*(?:\{(\d+)\}|(\d))")
MIXED = re.compile(r"(\d+)\s*\\[dt]?frac\s*(?:\{(\d+)\}|(\d))\s*(?:\{(\d+)\}|(\d))")


def fraction_value(text: str) -> Fraction | None:
    """The exact value of a plain numeric gold (`\\frac{3}{8}`, `1\\frac{4}{5}`, `0.15`, `58,500`)."""
    text = text.strip()
    if GROUPED.fullmatch(text):
        text = re.sub(r",(?:\\!)?\s*", "", text)
    if INTEGER.fullmatch(text) or DECIMAL.fullmatch(text) or SCIENTIFIC.fullmatch(text):
        return Fraction(text)
    match = FRACTION.fullmatch(text)
    if match:
        sign, num_braced, num_digit, den_braced, den_digit = match.groups()
        denominator = int(den_braced or den_digit)
        if denominator == 0:
            return None
        value = Fraction(int(num_braced or num_digit), denominator)
        return -value if sign else value
    match = MIXED.fullmatch(text)
    if match:
        whole, num_braced, num_digit, den_braced, den_digit = match.groups()
        return int(whole) + Fraction(int(num_braced or num_digit), int(den_braced or den_digit))
    return None


def terminating_decimal(value: Fraction) -> str | None:
    """`Fraction(7, 4)` -> `1.75`; None when the decimal does not end (1/3)."""
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator != 1:
        return None
    text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def latex_fraction(value: Fraction) -> str:
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def bump_number(literal: str, tolerant: bool) -> str:
    """Another number in the same format: +1 in the last digit, or (tolerant sets) in the first.

    A tolerant set's near miss must lie far outside any rounding of the gold: the leading
    significant digit goes up by one (at least 10% away).
    """
    value = Decimal(literal)
    places = -value.as_tuple().exponent if "." in literal else 0
    if tolerant and value != 0:
        step = Decimal(1).scaleb(value.adjusted())
    else:
        step = Decimal(1).scaleb(-places)
    bumped = value + step
    text = f"{bumped:.{places}f}" if places else str(int(bumped))
    if literal.startswith(".") and text.startswith("0."):
        text = text[1:]
    return text


def first_number_span(text: str) -> tuple[int, int] | None:
    """Where the first number outside subscripts and `\\text{}` is (a name like `C_{1}` is no number)."""
    blocked = [False] * len(text)
    for match in re.finditer(r"_\s*(\{[^{}]*\}|\w)|\\(?:text|mbox|mathrm|operatorname)\s*\{[^{}]*\}", text):
        for index in range(match.start(), match.end()):
            blocked[index] = True
    for match in NUMBER.finditer(text):
        if not any(blocked[match.start() : match.end()]):
            if match.start() > 0 and text[match.start() - 1] == "\\":
                continue
            return match.start(), match.end()
    return None


# ----------------------------------------------------------------------------- gold formats


def strip_var(text: str) -> tuple[str, str]:
    """`x=5` -> ("x=", "5"); `x \\in [-2,7]` -> ("x \\in ", "[-2,7]"); else ("", text)."""
    match = re.fullmatch(r"([a-zA-Z](?:_\{?\w+\}?)?\s*(?:=|\\in)\s*)(.+)", text.strip())
    return (match.group(1), match.group(2)) if match else ("", text)


DEGREES = re.compile(r"(.+?)\s*\^\s*\{?\\circ\}?")
PERCENT = re.compile(r"(.+?)\s*\\?%")
CURRENCY = re.compile(r"\\\$\s*(.+)")
UNIT = re.compile(r"(.+?)\s*\\(?:text|mbox|mathrm)\s*\{\s*([a-zA-Z ]+?)\s*\}(\^\d)?")
TEXT = re.compile(r"\\(?:text|textbf|mathrm)\s*\{\s*([^{}]+?)\s*\}")
CHOICE = re.compile(r"\(([A-E])\)")
BASE = re.compile(r"(\d+)_\{?(\d+)\}?")
MATRIX = re.compile(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", re.S)
SYMBOLS_OF_A_LIST = ("=", "\\in", "<", ">", "\\le", "\\ge", "\\cup", "\\text", "\\mbox", "\\\\", "|")


def list_items(gold: Gold) -> list[str] | None:
    """The answers of a list gold (`1,3,5`, `\\{1,3\\}`, `(1,2),(3,4)`), None for a single answer."""
    if is_prose(gold.text):
        return None
    text = compact(gold.text)
    if text.startswith("\\{") and text.endswith("\\}"):
        text = text[2:-2]
    elif GROUPED.fullmatch(text.removeprefix("\\$")):
        return None
    items = split_top(text)
    return items if len(items) >= 2 and all(items) else None


def interval_parts(text: str) -> list[str] | None:
    """`(-\\infty,2)\\cup(3,\\infty)` -> its intervals; None when not intervals (or tuples) of two ends."""
    parts = [part.strip() for part in compact(text).split("\\cup")]
    for part in parts:
        if not (part[:1] in "([" and part[-1:] in ")]" and is_wrapped("(" + part[1:-1] + ")", "(", ")")):
            return None
        if len(split_top(part[1:-1])) != 2:
            return None
    return parts


def is_plain_expression(text: str) -> bool:
    """One expression: no list, tuple, interval, relation, text or matrix."""
    return not any(symbol in text for symbol in SYMBOLS_OF_A_LIST + (",",))


def term_cuts(text: str) -> list[int]:
    """Where the binary `+`/`-` outside brackets are (`1+2(a-b)` -> [1]; not `10^{-2}`, `1e-5`)."""
    depths = depth_profile(text)
    return [
        index
        for index, char in enumerate(text)
        if char in "+-" and index > 0 and depths[index] == 0 and text[index - 1] not in "^_{(,=*/e"
    ]


def two_terms(text: str) -> tuple[str, str, str] | None:
    """`11 \\sqrt{5} + 11` -> ("11\\sqrt{5}", "+", "11"): a sum of exactly two top-level terms."""
    text = compact(text)
    if not is_plain_expression(text) or "\\pm" in text or "\\mp" in text:
        return None
    cuts = term_cuts(text)
    if len(cuts) != 1:
        return None
    cut = cuts[0]
    first, second = text[:cut], text[cut + 1 :]
    if not first or not second or first == "-" or re.search(r"\\[a-zA-Z]+$", first):
        return None
    return first, text[cut], second


def has_variable(text: str) -> bool:
    """A letter outside LaTeX commands (`2x+3`, `n+1`; not `\\frac{\\pi}{4}`)."""
    return bool(re.search(r"[a-zA-Z]", re.sub(r"\\[a-zA-Z]+", "", text)))


def equation_sides(gold: Gold) -> tuple[str, str] | None:
    """(left, right) of a gold that is one equation between variables (`y = 2x + 3`,
    `5x - 7y + 11z + 4 = 0`), not a value named by a variable (`x = 5`) nor a list of equations."""
    text = compact(gold.text)
    if text.count("=") != 1 or is_prose(gold.text) or len(split_top(text)) > 1 or "\\\\" in text:
        return None
    left, right = text.split("=")
    if not left or not right or not (has_variable(left) and has_variable(left + right) and
                                      (has_variable(right) or right == "0")):  # fmt: skip
        return None
    return left, right


def negated(expression: str) -> str:
    """Every top-level term's sign flipped: `5x-7y+4` -> `-5x+7y-4`."""
    cuts = set(term_cuts(expression))
    flipped = "".join({"+": "-", "-": "+"}[char] if index in cuts else char for index, char in enumerate(expression))
    return flipped[1:] if flipped.startswith("-") else "-" + flipped


def last_term_flipped(expression: str) -> str:
    """The last top-level term's sign flipped (`2x+3` -> `2x-3`); a single term negated."""
    cuts = term_cuts(expression)
    if not cuts:
        return expression[1:] if expression.startswith("-") else "-" + expression
    cut = cuts[-1]
    return expression[:cut] + {"+": "-", "-": "+"}[expression[cut]] + expression[cut + 1 :]


def interval_answer(gold: Gold) -> tuple[str, list[str]] | None:
    """(variable, intervals) of a gold that is a set of numbers written as intervals (`x \\in [-2,7]`,
    `(\\frac{3}{5},\\frac{8}{3}]`, `(-\\infty,2)\\cup(3,\\infty)`). An open pair `(a,b)` of finite
    ends may be a point, so it counts only after `\\in` or where the problem speaks of an interval."""
    prefix, value = strip_var(gold.text)
    parts = interval_parts(value)
    if not parts or (prefix and "\\in" not in prefix):
        return None
    variable = prefix.split("\\in")[0].strip() or "x"
    stated = bool(prefix) or bool(re.search(r"(?i)\binterval", gold.problem))
    for part in parts:
        if part[0] == "(" and part[-1] == ")" and "\\infty" not in part and not stated:
            return None
    return variable, parts


def as_inequality(variable: str, parts: list[str]) -> str | None:
    """`[-2,7]` -> `-2 \\le x \\le 7`, `(3,\\infty)` -> `x > 3`; a union joined by `\\text{ or }`."""
    pieces = []
    for part in parts:
        low, high = split_top(part[1:-1])
        below, above = ("<" if part[0] == "(" else "\\le"), ("<" if part[-1] == ")" else "\\le")
        if "\\infty" in low and "\\infty" in high:
            return None
        if "\\infty" in low:
            pieces.append(f"{variable} {above} {high}")
        elif "\\infty" in high:
            pieces.append(f"{variable} {below.replace('<', '>').replace('le', 'ge')} {low}")
        else:
            pieces.append(f"{low} {below} {variable} {above} {high}")
    return " \\text{ or } ".join(pieces)


# ----------------------------------------------------------------------------- rules

Maker = Callable[[Gold], Iterable[str]]


@dataclass(frozen=True)
class Rule:
    name: str
    label: bool
    make: Maker
    doc: str


ANSWER_RULES: list[Rule] = []


def rule(name: str, label: bool) -> Callable[[Maker], Maker]:
    def register(make: Maker) -> Maker:
        ANSWER_RULES.append(Rule(name, label, make, (make.__doc__ or "").strip()))
        return make

    return register


# ---- equivalent rewritings (label 1)


@rule("as_given", True)
def as_given(gold: Gold):
    """The gold exactly as the set writes it."""
    yield gold.text


@rule("latex_spacing", True)
def latex_spacing(gold: Gold):
    """Blanks, `\\left`/`\\right` and thin spaces removed; or blanks after commas and around operators."""
    if is_prose(gold.text):
        return
    yield compact(gold.text)
    if "\\\\" not in gold.text:  # a matrix's `-1` after `\\begin{pmatrix}` is no binary minus
        yield spaced(gold.text)


@rule("dfrac", True)
def dfrac(gold: Gold):
    """`\\frac` written `\\dfrac` (and back)."""
    if "\\dfrac" in gold.text:
        yield gold.text.replace("\\dfrac", "\\frac")
    elif "\\frac" in gold.text:
        yield re.sub(r"\\frac(?![a-zA-Z])", r"\\dfrac", gold.text)


@rule("latex_braces", True)
def latex_braces(gold: Gold):
    """Shorthand arguments braced: `\\frac 34` -> `\\frac{3}{4}`, `\\sqrt2` -> `\\sqrt{2}`."""
    yield brace_shorthand(gold.text)


@rule("fraction_as_slash", True)
def fraction_as_slash(gold: Gold):
    """A numeric fraction as `a/b`; a mixed number as its improper fraction."""
    value = fraction_value(gold.text)
    if value is not None and value.denominator != 1 and ("frac" in gold.text):
        yield f"{value.numerator}/{value.denominator}"
        if MIXED.fullmatch(gold.text.strip()):
            yield latex_fraction(value)


@rule("fraction_as_decimal", True)
def fraction_as_decimal(gold: Gold):
    """A numeric fraction with a terminating decimal written as that decimal (`\\frac{7}{4}` -> 1.75)."""
    value = fraction_value(gold.text)
    if value is not None and value.denominator != 1 and "frac" in gold.text:
        decimal = terminating_decimal(value)
        if decimal is not None:
            yield decimal


@rule("decimal_as_fraction", True)
def decimal_as_fraction(gold: Gold):
    """A decimal written as its reduced fraction (`0.15` -> `\\frac{3}{20}`)."""
    if DECIMAL.fullmatch(gold.text.strip()):
        value = Fraction(gold.text.strip())
        if value.denominator != 1 and value.denominator <= 20:
            yield latex_fraction(value)


@rule("decimal_form", True)
def decimal_form(gold: Gold):
    """A decimal with its leading zero (`.35` -> `0.35`), a one-place decimal with two (`1.6` -> `1.60`)."""
    text = gold.text.strip()
    if DECIMAL.fullmatch(text):
        if text.lstrip("-").startswith("."):
            yield text.replace(".", "0.", 1)
        elif re.fullmatch(r"-?\d+\.\d", text):
            yield text + "0"


@rule("thousands_separator", True)
def thousands_separator(gold: Gold):
    """Digit groups: `10,\\!080` -> `10080`; `13535` -> `13,535` (not where commas separate answers), `13{,}535`."""
    text = gold.text.strip()
    if GROUPED.fullmatch(text):
        yield re.sub(r",(?:\\!)?\s*", "", text)
        yield re.sub(r",(?:\\!)?\s*", "{,}", text)
    elif INTEGER.fullmatch(text) and abs(int(text)) >= 10_000:
        if not gold.comma_lists:
            yield f"{int(text):,}"
        yield f"{int(text):,}".replace(",", "{,}")


@rule("zero_padded", True)
def zero_padded(gold: Gold):
    """An AIME answer below 100 with three digits, as AIME answer sheets write it (`25` -> `025`)."""
    text = gold.text.strip()
    if any(name in gold.benchmark.lower() for name in AIME_BENCHMARKS) and text.isdigit() and int(text) < 100:
        yield f"{int(text):03d}"


@rule("scientific_notation", True)
def scientific_notation(gold: Gold):
    """`4.5e33` as `4.5 \\times 10^{33}`, `4.5 \\cdot 10^{33}`, and in full when it is short."""
    match = SCIENTIFIC.fullmatch(gold.text.strip())
    if match:
        mantissa, exponent = match.group(1), int(match.group(2))
        yield f"{mantissa} \\times 10^{{{exponent}}}"
        yield f"{mantissa}\\cdot10^{{{exponent}}}"
        if -6 <= exponent <= 9:
            yield format(Decimal(gold.text.strip()), "f")


@rule("degrees", True)
def degrees(gold: Gold):
    """Angles (`90^\\circ`, `90^{\\circ},60^{\\circ}`) without the sign, with `°`, `^{\\circ}` or the word."""
    items = list_items(gold) or [gold.text.strip()]
    matches = [DEGREES.fullmatch(item) for item in items]
    if all(matches):
        numbers = [match.group(1).strip() for match in matches]
        for suffix in ("", "°", "^{\\circ}", "\\text{ degrees}"):
            yield ", ".join(number + suffix for number in numbers)


@rule("percent", True)
def percent(gold: Gold):
    """A percent gold (`62.5%`) with `\\%`, or as the bare number the question asks for."""
    match = PERCENT.fullmatch(gold.text.strip())
    if match:
        yield match.group(1).strip() + "\\%"
        yield match.group(1).strip()


@rule("currency", True)
def currency(gold: Gold):
    """A dollar gold (`\\$18.90`) without the sign, or with the word."""
    match = CURRENCY.fullmatch(gold.text.strip())
    if match:
        yield match.group(1)
        yield match.group(1) + "\\text{ dollars}"


@rule("units", True)
def units(gold: Gold):
    """A gold with units (`15\\mbox{ cm}^2`) without them, or with `\\mathrm{}`."""
    match = UNIT.fullmatch(gold.text.strip())
    if match and match.group(2).strip() not in ("and", "or"):
        number, unit, power = match.group(1).strip(), match.group(2).strip(), match.group(3) or ""
        yield number
        yield f"{number}\\mathrm{{~{unit}}}{power}"


@rule("text_answer", True)
def text_answer(gold: Gold):
    """A word or choice gold (`\\text{Evelyn}`, `\\text{(B)}`) without `\\text`, or in bold."""
    match = TEXT.fullmatch(gold.text.strip())
    if match:
        word = match.group(1)
        yield word
        yield f"\\textbf{{{word}}}"
        choice = CHOICE.fullmatch(word)
        if choice:
            yield choice.group(1)


@rule("without_variable", True)
def without_variable(gold: Gold):
    """`x=5` -> `5` and `x \\in [-2,7]` -> `[-2,7]` (a one-letter name; the value is a number or an interval)."""
    prefix, value = strip_var(gold.text)
    if prefix and (fraction_value(value) is not None or interval_parts(value) is not None):
        yield value


@rule("percent_word", True)
def percent_word(gold: Gold):
    """A percent gold (`28\\%`) with the word instead of the sign: `28 percent`, `28 percentage`."""
    match = PERCENT.fullmatch(gold.text.strip())
    if match:
        yield match.group(1).strip() + " percent"
        yield match.group(1).strip() + " percentage"


@rule("equation_rearranged", True)
def equation_rearranged(gold: Gold):
    """An equation between variables, rearranged: sides swapped, everything on one side
    (`y = 2x + 3` -> `2x+3-y=0`), or both sides negated (`5x-7y+4=0` -> `-5x+7y-4=0`)."""
    sides = equation_sides(gold)
    if sides:
        left, right = sides
        yield f"{right} = {left}"
        if right == "0":
            yield f"{negated(left)}=0"
        else:
            yield f"{right}-{left}=0" if not term_cuts(left) else f"{right}-({left})=0"


@rule("interval_as_inequality", True)
def interval_as_inequality(gold: Gold):
    """An interval gold (`x \\in [-2,7]`, `(\\frac{3}{5},\\frac{8}{3}]`) as the inequality that defines it
    (`-2 \\le x \\le 7`); a union as inequalities joined by "or"."""
    found = interval_answer(gold)
    if found:
        inequality = as_inequality(*found)
        if inequality:
            yield inequality


@rule("reordered_list", True)
def reordered_list(gold: Gold):
    """The answers of a "find all" list (or of a set) in reverse order; a union of intervals reordered."""
    items = list_items(gold)
    if items and (gold.asks_for_all or gold.text.strip().startswith("\\{")) and len(set(items)) > 1:
        if not any("=" in item for item in items) or all("=" in item for item in items):
            yield ", ".join(reversed(items))
    parts = interval_parts(gold.text)
    if parts and len(parts) > 1:
        yield " \\cup ".join(reversed(parts))


@rule("set_braces", True)
def set_braces(gold: Gold):
    """A "find all" list written as a set `\\{...\\}`, a set written as a plain list."""
    items = list_items(gold)
    if not items:
        return
    if gold.text.strip().startswith("\\{"):
        yield ", ".join(items)
    elif gold.asks_for_all:
        yield "\\{" + ", ".join(items) + "\\}"


@rule("list_with_and", True)
def list_with_and(gold: Gold):
    """Two answers of a "find all" list joined by "and"."""
    items = list_items(gold)
    if items and len(items) == 2 and gold.asks_for_all:
        yield f"{items[0]} \\text{{ and }} {items[1]}"


@rule("reordered_sum", True)
def reordered_sum(gold: Gold):
    """The two terms of a sum swapped: `1+2\\sqrt{3}` -> `2\\sqrt{3}+1`, `6-5i` -> `-5i+6`."""
    terms = two_terms(gold.text)
    if terms:
        first, operator, second = terms
        lead = "-" if operator == "-" else ""
        if first.startswith("-"):
            yield f"{lead}{second}{first}"
        else:
            yield f"{lead}{second}+{first}"


@rule("matrix_brackets", True)
def matrix_brackets(gold: Gold):
    """A `pmatrix` as a `bmatrix`, its `a/b` entries as `\\frac{a}{b}`."""
    if MATRIX.search(gold.text):
        yield gold.text.replace("pmatrix", "bmatrix")
        yield re.sub(r"(-?)(\d+)/(\d+)", r"\1\\frac{\2}{\3}", gold.text)


@rule("base_subscript", True)
def base_subscript(gold: Gold):
    """A number in a base with its base braced: `52_8` -> `52_{8}`."""
    match = BASE.fullmatch(gold.text.strip())
    if match:
        yield f"{match.group(1)}_{{{match.group(2)}}}"


# ---- near misses (label 0)


@rule("changed_number", False)
def changed_number(gold: Gold):
    """The first number of the gold changed, in its format: off by one (tolerant sets: the leading digit)."""
    text = brace_shorthand(gold.text)  # `\\frac 59` -> `\\frac{5}{9}`: a bumped digit stays one argument
    span = first_number_span(text)
    if span is None:
        return
    start, end = span
    literal = text[start:end]
    exponent = SCIENTIFIC.fullmatch(text.strip())
    yield text[:start] + bump_number(literal, gold.tolerant or bool(exponent)) + text[end:]


@rule("power_of_ten", False)
def power_of_ten(gold: Gold):
    """A tolerant set's number off by a power of ten: the decimal point moved, the exponent wrong."""
    if not gold.tolerant:
        return
    text = gold.text.strip()
    match = SCIENTIFIC.fullmatch(text)
    if match:
        yield f"{match.group(1)}e{int(match.group(2)) + 1}"
    elif INTEGER.fullmatch(text) or DECIMAL.fullmatch(text):
        if Fraction(text) != 0:
            yield format((Decimal(text) * 10).normalize(), "f")


@rule("wrong_sign", False)
def wrong_sign(gold: Gold):
    """The gold negated: `-` dropped from a leading minus, else `-` (or `-(...)`) put in front."""
    text = gold.text.strip()
    value = fraction_value(text)
    if value == 0 or not is_plain_expression(text) or CURRENCY.match(text) or MATRIX.search(text):
        return
    if DEGREES.fullmatch(text) or PERCENT.fullmatch(text) or BASE.fullmatch(text) or is_prose(text):
        return
    if term_cuts(compact(text)) or "\\pm" in text:
        yield f"-({text})"
    elif text.startswith("-"):
        yield text[1:].lstrip()
    else:
        yield f"-{text}"


@rule("reciprocal", False)
def reciprocal(gold: Gold):
    """A numeric fraction turned upside down."""
    value = fraction_value(gold.text)
    if value is not None and value.denominator != 1 and abs(value.numerator) != 1 and "frac" in gold.text:
        yield latex_fraction(1 / value)


@rule("rounded_decimal", False)
def rounded_decimal(gold: Gold):
    """A fraction with no exact decimal (`\\frac{5}{6}`) rounded to 4 digits: wrong where answers are exact."""
    value = fraction_value(gold.text)
    if value is not None and not gold.tolerant and terminating_decimal(value) is None:
        yield f"{float(value):.4g}"


@rule("dropped_item", False)
def dropped_item(gold: Gold):
    """A list, set or union with its last answer (or interval) left out."""
    items = list_items(gold)
    if items:
        kept = items[:-1]
        text = ", ".join(kept)
        yield "\\{" + text + "\\}" if gold.text.strip().startswith("\\{") else text
    parts = interval_parts(gold.text)
    if parts and len(parts) > 1:
        yield " \\cup ".join(parts[:-1])


@rule("swapped_bracket", False)
def swapped_bracket(gold: Gold):
    """An interval (or pair) with one finite end's bracket changed: `(3,4]` -> `[3,4]`."""
    prefix, value = strip_var(gold.text)
    parts = interval_parts(value)
    if not parts:
        return
    first = parts[0]
    left, right = split_top(first[1:-1])
    if "\\infty" not in left:
        first = {"(": "[", "[": "("}[first[0]] + first[1:]
    elif "\\infty" not in right:
        first = first[:-1] + {")": "]", "]": ")"}[first[-1]]
    else:
        return
    yield prefix + " \\cup ".join([first, *parts[1:]])


@rule("swapped_components", False)
def swapped_components(gold: Gold):
    """A tuple (the first of a list of tuples) with its first two components swapped."""
    text = compact(gold.text)
    items = split_top(text)
    first = items[0]
    if not is_wrapped(first, "(", ")"):
        return
    components = split_top(first[1:-1])
    if len(components) >= 2 and components[0] != components[1]:
        components[0], components[1] = components[1], components[0]
        items[0] = "(" + ",".join(components) + ")"
        yield ",".join(items)


@rule("percent_word_changed", False)
def percent_word_changed(gold: Gold):
    """A percent gold's number changed, written with the word: `29 percent` for `28\\%`."""
    match = PERCENT.fullmatch(gold.text.strip())
    if match and fraction_value(match.group(1).strip()) is not None:
        yield bump_number(match.group(1).strip(), gold.tolerant) + " percent"


@rule("equation_shifted", False)
def equation_shifted(gold: Gold):
    """An equation with its last term's sign flipped (`y = 2x - 3` for `y = 2x + 3`: a parallel line),
    as written and rearranged to one side."""
    sides = equation_sides(gold)
    if sides:
        left, right = sides
        if right == "0":
            yield f"{last_term_flipped(left)}=0"
        else:
            yield f"{left}={last_term_flipped(right)}"
            yield (
                f"{last_term_flipped(right)}-{left}=0"
                if not term_cuts(left)
                else f"{last_term_flipped(right)}-({left})=0"
            )


@rule("inequality_strictness", False)
def inequality_strictness(gold: Gold):
    """An interval gold as an inequality with one finite end's strictness changed (`-2 < x \\le 7`)."""
    found = interval_answer(gold)
    if found:
        variable, parts = found
        low, high = split_top(parts[0][1:-1])
        first = parts[0]
        if "\\infty" not in low:
            first = {"(": "[", "[": "("}[first[0]] + first[1:]
        elif "\\infty" not in high:
            first = first[:-1] + {")": "]", "]": ")"}[first[-1]]
        inequality = as_inequality(variable, [first, *parts[1:]])
        if inequality and first != parts[0]:
            yield inequality


@rule("other_choice", False)
def other_choice(gold: Gold):
    """A multiple-choice gold answered with the next letter."""
    match = TEXT.fullmatch(gold.text.strip())
    choice = CHOICE.fullmatch(match.group(1)) if match else None
    if choice:
        letter = "ABCDE"[("ABCDE".index(choice.group(1)) + 1) % 5]
        yield f"\\text{{({letter})}}"


# ----------------------------------------------------------------------------- wrapping rules
# (template, label, response from (gold answer, a near miss or None)); None: not applicable


@dataclass(frozen=True)
class WrapRule:
    name: str
    template: str
    label: bool
    build: Callable[[str, str | None], str | None]


WRAP_RULES = [
    WrapRule("box_in_prose", "r1", True,
             lambda answer, miss: THINKING + f"So the answer is $\\boxed{{{answer}}}$, and every condition of the problem holds."),
    WrapRule("final_answer_display", "r1", True,
             lambda answer, miss: R1_BODY + f"**Final Answer**\n\\[\n\\boxed{{{answer}}}\n\\]"),
    WrapRule("revised_answer", "r1", True,
             lambda answer, miss: None if miss is None else
             R1_BODY + f"At first I got $\\boxed{{{miss}}}$, but that misses a case.\n"
             f"Correcting it, the answer is $\\boxed{{{answer}}}$."),
    WrapRule("changed_mind", "r1", False,
             lambda answer, miss: None if miss is None else
             R1_BODY + f"At first I got $\\boxed{{{answer}}}$, but that misses a case.\n"
             f"Correcting it, the answer is $\\boxed{{{miss}}}$."),
    WrapRule("answer_in_dollars", "dapo", True, lambda answer, miss: DAPO_BODY + f"Answer: ${answer}$"),
    WrapRule("answer_boxed", "dapo", True, lambda answer, miss: DAPO_BODY + f"Answer: $\\boxed{{{answer}}}$"),
    WrapRule("revised_answer", "dapo", True,
             lambda answer, miss: None if miss is None else
             DAPO_BODY + f"Answer: {miss}\nWait, that misses a case. Correcting it:\nAnswer: {answer}"),
    WrapRule("changed_mind", "dapo", False,
             lambda answer, miss: None if miss is None else
             DAPO_BODY + f"Answer: {answer}\nWait, that misses a case. Correcting it:\nAnswer: {miss}"),
]  # fmt: skip


# ----------------------------------------------------------------------------- the generator


class LabelConflict(ValueError):
    """One answer text was produced both as an equivalent and as a near miss: a rule is wrong."""


def answers_for(gold: Gold) -> list[tuple[str, str, bool]]:
    """(rule, answer text, label) of one gold; each distinct answer text once, first rule wins."""
    seen: dict[str, tuple[str, bool]] = {}
    out = []
    for answer_rule in ANSWER_RULES:
        for answer in answer_rule.make(gold):
            answer = answer.strip()
            if not answer:
                continue
            if answer in seen:
                if seen[answer][1] != answer_rule.label:
                    raise LabelConflict(
                        f"{gold.problem_id}: {answer!r} is both {seen[answer][0]} (label {int(seen[answer][1])}) "
                        f"and {answer_rule.name} (label {int(answer_rule.label)}) for gold {gold.text!r}"
                    )
                continue
            seen[answer] = (answer_rule.name, answer_rule.label)
            out.append((answer_rule.name, answer, answer_rule.label))
    return out


def pairs_for(gold: Gold) -> Iterator[Pair]:
    """Every labelled pair of one gold: each answer in both templates, then the wrapping rules."""
    answers = answers_for(gold)
    for rule_name, answer, label in answers:
        for template, render in RESPONSE_TEMPLATES.items():
            yield Pair(gold.benchmark, gold.problem_id, gold.text, answer, render(answer), template, rule_name, label)
    miss = next((answer for name, answer, label in answers if name == "changed_number"), None)
    for wrap in WRAP_RULES:
        response = wrap.build(gold.text, miss)
        if response is not None:
            yield Pair(
                gold.benchmark, gold.problem_id, gold.text, gold.text, response, wrap.template, wrap.name, wrap.label
            )


def generate(golds: Iterable[Gold]) -> list[Pair]:
    return [pair for gold in golds for pair in pairs_for(gold)]


def rule_docs() -> dict[str, str]:
    """Rule name -> what it does (for the docs and --list-rules)."""
    docs = {answer_rule.name: answer_rule.doc for answer_rule in ANSWER_RULES}
    docs.update(
        box_in_prose="r1: the box inside a sentence that goes on.",
        final_answer_display="r1: `**Final Answer**` then a display `\\[\\boxed{}\\]`.",
        revised_answer="an earlier wrong answer, then the right one last.",
        changed_mind="the right answer first, then a wrong one last.",
        answer_in_dollars="dapo: `Answer: $...$`.",
        answer_boxed="dapo: `Answer: $\\boxed{...}$`.",
    )
    return docs
