"""One way of writing credits: the Python function (pages, admin, commands) and the browser's ``formatCredits``
agree on every value of the same table."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conversations.services.billing.credit_format import format_credits, format_signed_credits
from conversations.templatetags.credits_format import credits, signed_credits

ROOT = Path(__file__).resolve().parent.parent
CASES = json.loads((ROOT / "tests/fixtures/credit_format_cases.json").read_text())


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_python_writes_credits_by_the_table(value, expected):
    assert format_credits(value) == expected
    assert credits(value) == expected  # the template filter is the same function


def test_signed_credits_mark_credits_with_a_plus():
    assert format_signed_credits("5") == signed_credits("5") == "+5.00"
    assert format_signed_credits("-1.010000") == "-1.01"
    assert format_signed_credits("0") == "0.00"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run static/js/texts.js")
def test_the_browser_writes_credits_by_the_same_table(tmp_path):
    # texts.js is an ES module using the page's gettext globals; a copy named .mjs imports under node as it is.
    module = tmp_path / "texts.mjs"
    module.write_text((ROOT / "static/js/texts.js").read_text())
    script = (
        "globalThis.gettext = (s) => s; globalThis.interpolate = (s) => s;"
        f"const {{ formatCredits }} = await import({json.dumps(module.as_uri())});"
        f"const cases = {json.dumps(CASES)};"
        "console.log(JSON.stringify(cases.map(([value]) => formatCredits(value))));"
    )
    result = subprocess.run(  # noqa: S603
        [shutil.which("node"), "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    assert list(zip([value for value, _ in CASES], written, strict=True)) == [(v, e) for v, e in CASES]
    # A number from JSON (the frames send strings, but a number must not take the float path).
    check = script.replace("cases.map(([value]) => formatCredits(value))", "[formatCredits(85), formatCredits(1.005)]")
    numbers = subprocess.run(  # noqa: S603
        [shutil.which("node"), "--input-type=module", "-e", check], capture_output=True, text=True, timeout=30
    )
    assert json.loads(numbers.stdout) == ["85.00", "1.01"]
