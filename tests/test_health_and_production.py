"""Health probes, security headers, request ids, and the production settings `check --deploy` asks for."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.django_db
def test_healthz_and_readyz_need_no_login(client, settings):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["checks"]["database"]["ok"] is True
    assert ("redis" in body["checks"]) is bool(settings.REDIS_URL)


@pytest.mark.django_db
def test_readyz_reports_an_unreachable_redis(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] == {"ok": False, "error": "ConnectionError"}


@pytest.mark.django_db
def test_every_response_has_a_csp_and_a_request_id(owner_client):
    response = owner_client.get("/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "object-src 'none'" in policy and "unsafe-inline" not in policy
    assert len(response["X-Request-ID"]) == 32
    echoed = owner_client.get("/api/me/", headers={"X-Request-ID": "abc-123"})
    assert echoed["X-Request-ID"] == "abc-123"
    forged = owner_client.get("/api/me/", headers={"X-Request-ID": "<script>"})
    assert forged["X-Request-ID"] != "<script>"


def _run(code: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "k" + "x7Qp2m9Zr4Lw8Nv1Bt6Yc3Hs5Jd0Fg" * 3,
    "ALLOWED_HOSTS": "chat.example.com",
    "DJANGO_SETTINGS_MODULE": "kimichat.settings",
}


def test_check_deploy_passes_with_no_warning(tmp_path):
    result = _run(
        "import django, sys; from django.core.management import call_command; django.setup();"
        "call_command('check', '--deploy', '--fail-level', 'WARNING')",
        KIMICHAT_VAR_DIR=str(tmp_path),
        **PRODUCTION,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_production_settings_are_secure(tmp_path):
    result = _run(
        "import django, json; django.setup(); from django.conf import settings as s;"
        "print(json.dumps([s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY,"
        " s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, list(s.SECURE_PROXY_SSL_HEADER),"
        " s.PASSWORD_HASHERS[0], s.LOG_FORMAT, s.STORAGES['staticfiles']['BACKEND']]))",
        KIMICHAT_VAR_DIR=str(tmp_path),
        **PRODUCTION,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        True,
        True,
        True,
        True,
        31_536_000,
        ["HTTP_X_FORWARDED_PROTO", "https"],
        "django.contrib.auth.hashers.Argon2PasswordHasher",
        "json",
        "whitenoise.storage.CompressedManifestStaticFilesStorage",
    ]


def test_json_logs_carry_the_request_id(tmp_path):
    code = (
        "import django, logging; django.setup();"
        "from kimichat.logs import request_id_var; request_id_var.set('req-42');"
        "logging.getLogger('kimichat.test').warning('hello %s', 'world')"
    )
    result = _run(code, KIMICHAT_VAR_DIR=str(tmp_path), **PRODUCTION)
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["message"] == "hello world" and line["request_id"] == "req-42" and line["level"] == "WARNING"
