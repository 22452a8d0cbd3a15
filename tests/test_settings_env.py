"""The settings helpers fail loudly on bad values instead of silently falling back to a default."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from kimichat import env


@pytest.mark.parametrize("raw,expected", [("true", True), ("1", True), ("ON", True), ("false", False), ("0", False)])
def test_env_bool_accepts_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("X_FLAG", raw)
    assert env.env_bool("X_FLAG", not expected) is expected


@pytest.mark.parametrize("raw", ["ture", "2", "enabled", "y e s"])
def test_env_bool_rejects_anything_else(monkeypatch, raw):
    monkeypatch.setenv("X_FLAG", raw)
    with pytest.raises(ImproperlyConfigured, match="X_FLAG"):
        env.env_bool("X_FLAG", False)


def test_unset_and_empty_values_take_the_default(monkeypatch):
    monkeypatch.delenv("X_NUM", raising=False)
    assert env.env_int("X_NUM", 7) == 7
    monkeypatch.setenv("X_NUM", "  ")
    assert env.env_int("X_NUM", 7) == 7


@pytest.mark.parametrize("raw", ["12a", "1.5", "ten"])
def test_env_int_rejects_non_integers(monkeypatch, raw):
    monkeypatch.setenv("X_NUM", raw)
    with pytest.raises(ImproperlyConfigured, match="X_NUM must be a whole number"):
        env.env_int("X_NUM", 1)


def test_env_int_enforces_bounds(monkeypatch):
    monkeypatch.setenv("X_NUM", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env.env_int("X_NUM", 5, minimum=1)
    monkeypatch.setenv("X_NUM", "70000")
    with pytest.raises(ImproperlyConfigured, match="at most 65535"):
        env.env_int("X_NUM", 5, maximum=65535)


@pytest.mark.parametrize("raw", ["nan", "inf", "abc"])
def test_env_float_rejects_non_finite(monkeypatch, raw):
    monkeypatch.setenv("X_F", raw)
    with pytest.raises(ImproperlyConfigured, match="X_F"):
        env.env_float("X_F", 1.0)


def test_env_list_rejects_empty_items(monkeypatch):
    monkeypatch.setenv("X_HOSTS", "a.example,,b.example")
    with pytest.raises(ImproperlyConfigured, match="empty item"):
        env.env_list("X_HOSTS", [])
    monkeypatch.setenv("X_HOSTS", "a.example, b.example")
    assert env.env_list("X_HOSTS", []) == ["a.example", "b.example"]


def test_env_secret_reads_a_file(monkeypatch, tmp_path):
    secret_file = tmp_path / "key"
    secret_file.write_text("s3cret\n")
    monkeypatch.delenv("X_SECRET", raising=False)
    monkeypatch.setenv("X_SECRET_FILE", str(secret_file))
    assert env.env_secret("X_SECRET") == "s3cret"
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        env.env_secret("X_SECRET")


def test_development_secret_key_is_made_once_and_kept(tmp_path):
    first = env.development_secret_key(tmp_path)
    assert len(first) >= 50
    assert env.development_secret_key(tmp_path) == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_database_url_sqlite_and_postgres():
    assert env.parse_database_url("sqlite:////tmp/x.db") == {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "/tmp/x.db",
    }
    pg = env.parse_database_url("postgres://kc:p%40ss@db.internal:6432/kimichat?sslmode=require")
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert (pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"], pg["NAME"]) == (
        "kc",
        "p@ss",
        "db.internal",
        "6432",
        "kimichat",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"}


@pytest.mark.parametrize(
    "url,message",
    [
        ("mysql://u@h/db", "must start with sqlite:// or postgres://"),
        ("postgres://u@h/", "must name a database"),
        ("postgres://u@h:notaport/db", "bad port"),
        ("sqlite://", "names no SQLite file"),
    ],
)
def test_database_url_rejects_bad_values(url, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        env.parse_database_url(url)


def test_production_without_secret_key_refuses_to_start(tmp_path):
    """Importing the settings with DEBUG=false and no SECRET_KEY must fail, in a fresh interpreter."""
    import os
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "SECRET_KEY_FILE"}}
    environment.update({"DEBUG": "false", "KIMICHAT_VAR_DIR": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-c", "import kimichat.settings"], env=environment, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set" in result.stderr


def test_load_dotenv_sets_only_what_the_environment_lacks(monkeypatch, tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text('# comment\nX_ONE=1\nexport X_TWO="two words"\nX_THREE=from-file\n')
    monkeypatch.delenv("X_ONE", raising=False)
    monkeypatch.delenv("X_TWO", raising=False)
    monkeypatch.setenv("X_THREE", "from-env")
    env.load_dotenv(dotenv)
    import os

    assert (os.environ["X_ONE"], os.environ["X_TWO"], os.environ["X_THREE"]) == ("1", "two words", "from-env")
    dotenv.write_text("not a pair\n")
    with pytest.raises(ImproperlyConfigured, match=":1 is not a NAME=value line"):
        env.load_dotenv(dotenv)


def _database_settings(**env_vars) -> tuple[int, str]:
    """DATABASES["default"] as a fresh process with this environment builds it (settings are read once)."""
    import json
    import os
    import subprocess
    import sys

    env_ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_URL"))}
    env_.update(DJANGO_SETTINGS_MODULE="kimichat.settings", **env_vars)
    code = (
        "import json, django; from django.conf import settings; django.setup(); "
        "db = settings.DATABASES['default']; "
        "print(json.dumps({'pool': db.get('OPTIONS', {}).get('pool'), 'age': db['CONN_MAX_AGE']}))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env_, capture_output=True, text=True, check=False)  # noqa: S603
    return done.returncode, (json.loads(done.stdout) if done.returncode == 0 else done.stderr)


def test_postgres_connections_are_pooled_per_worker_by_default():
    url = "postgres://kc@127.0.0.1:5432/kc"
    assert _database_settings(DATABASE_URL=url) == (0, {"pool": {"min_size": 1, "max_size": 10}, "age": 0})
    assert _database_settings(DATABASE_URL=url, DATABASE_POOL_SIZE="3")[1]["pool"]["max_size"] == 3
    assert _database_settings(DATABASE_URL=url, DATABASE_POOL_SIZE="0", DATABASE_CONN_MAX_AGE="60")[1] == {
        "pool": None,
        "age": 60,
    }
    code, error = _database_settings(DATABASE_URL=url, DATABASE_CONN_MAX_AGE="60")
    assert code != 0 and "DATABASE_CONN_MAX_AGE must be 0 with DATABASE_POOL_SIZE" in error


def test_send_threads_leave_pooled_connections_for_the_rest_of_the_worker():
    """Each send thread (services/chat/sending.py) holds a pooled connection while it works."""
    import os
    import subprocess
    import sys

    def send_threads(**env_vars) -> tuple[int, str]:
        env_ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_URL", "SEND_THREADS"))}
        env_.update(
            DJANGO_SETTINGS_MODULE="kimichat.settings", DATABASE_URL="postgres://kc@127.0.0.1:5432/kc", **env_vars
        )
        code = "from django.conf import settings; print(settings.KIMICHAT_SEND_THREADS)"
        done = subprocess.run([sys.executable, "-c", code], env=env_, capture_output=True, text=True, check=False)  # noqa: S603
        return done.returncode, done.stdout.strip() if done.returncode == 0 else done.stderr

    assert send_threads() == (0, "4")  # the default pool of 10
    assert send_threads(DATABASE_POOL_SIZE="4") == (0, "2")  # a small pool: 2 left for the database thread, HTTP
    assert send_threads(DATABASE_POOL_SIZE="0", SEND_THREADS="8") == (0, "8")  # no pool: a connection per trip
    code, error = send_threads(DATABASE_POOL_SIZE="4", SEND_THREADS="4")
    assert code != 0 and "SEND_THREADS (4) must be below DATABASE_POOL_SIZE (4)" in error
