"""Every sentence a person can see is translated (issue 16, item 12): the Chinese catalogues hold every string the
code marks for translation, each with a translation, and the compiled catalogues match them.

The strings are extracted afresh from a copy of the sources with Django's own ``makemessages`` (GNU gettext), so
a new ``gettext("…")`` without a translation fails here rather than reaching a Chinese reader in English.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES"
SOURCES = ["conversations", "kimichat", "templates", "static/js", "manage.py"]

pytestmark = pytest.mark.skipif(shutil.which("xgettext") is None, reason="needs GNU gettext (make test installs it)")


def _entries(po: Path) -> dict[tuple[str, str], tuple[str, bool]]:
    """(msgctxt, msgid) -> (joined msgstr, fuzzy) of a .po file, without the header."""
    import polib

    catalogue = polib.pofile(str(po))
    entries = {}
    for entry in catalogue:
        if entry.obsolete:
            continue
        translated = entry.msgstr if not entry.msgid_plural else "".join(entry.msgstr_plural.values())
        entries[(entry.msgctxt or "", entry.msgid)] = (translated, "fuzzy" in entry.flags)
    return entries


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    """The catalogues as makemessages would write them today, made in a copy of the sources."""
    copy = tmp_path_factory.mktemp("sources")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "vendor"))
        else:
            shutil.copy(source, copy / name)
    (copy / "locale" / "zh_Hans" / "LC_MESSAGES").mkdir(parents=True)
    for domain in ("django", "djangojs"):
        subprocess.run(
            [sys.executable, "manage.py", "makemessages", "-l", "zh_Hans", "-d", domain, "--no-location"]
            + (["--ignore=static/vendor/*"] if domain == "djangojs" else []),
            cwd=copy,
            check=True,
            capture_output=True,
            env={"DJANGO_SETTINGS_MODULE": "kimichat.settings", "PATH": "/usr/bin:/bin", "KIMICHAT_VAR_DIR": str(copy)},
        )
    return copy / "locale" / "zh_Hans" / "LC_MESSAGES"


@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_every_marked_string_has_a_chinese_translation(extracted, domain):
    wanted = set(_entries(extracted / f"{domain}.po"))
    have = _entries(LOCALE / f"{domain}.po")
    missing = sorted(msgid for key in wanted if key not in have for msgid in [key[1]])
    untranslated = sorted(key[1] for key in wanted if key in have and (not have[key][0] or have[key][1]))
    assert missing == [], f"{len(missing)} strings are not in {domain}.po (run makemessages): {missing[:10]}"
    assert untranslated == [], f"{len(untranslated)} strings have no (or a fuzzy) translation: {untranslated[:10]}"


@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_the_compiled_catalogue_matches_its_source(tmp_path, domain):
    compiled = tmp_path / f"{domain}.mo"
    subprocess.run(["msgfmt", "--check", "-o", str(compiled), str(LOCALE / f"{domain}.po")], check=True)
    assert compiled.read_bytes() == (LOCALE / f"{domain}.mo").read_bytes(), f"run compilemessages: {domain}.mo is stale"
