"""KimiChat settings. Every value comes from the environment through ``kimichat.env``; see ``.env.example``."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from kimichat import redis_options
from kimichat.env import (
    development_secret_key,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_secret,
    env_str,
    load_dotenv,
    parse_database_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env")
VAR_DIR = Path(env_str("KIMICHAT_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", True)

SECRET_KEY = env_secret("SECRET_KEY")
if SECRET_KEY is None:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is false")
    SECRET_KEY = development_secret_key(VAR_DIR)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",  # first, so `runserver` serves ASGI (websockets included)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_otp",  # two-factor log-in to the admin for staff (conversations/admin/two_factor.py)
    "django_otp.plugins.otp_totp",
    "conversations",
]

MIDDLEWARE = [
    "kimichat.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "kimichat.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified(): the admin's second factor
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "kimichat.middleware.LoginRequiredMiddleware",
    "kimichat.middleware.ApiMethodNotAllowedMiddleware",
    "kimichat.middleware.NotFoundPageMiddleware",
]

ROOT_URLCONF = "kimichat.urls"
WSGI_APPLICATION = "kimichat.wsgi.application"
ASGI_APPLICATION = "kimichat.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "conversations.views.context_processors.kimichat",
            ],
        },
    },
]

DATABASES = {"default": parse_database_url(env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'kimichat.sqlite3'}"))}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Tests use a file (one per test run) rather than memory, so a real daphne process can share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    # WAL lets the daphne process read while a generation writes; the timeout rides out short write locks.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # The thread that runs a worker's websocket and generation database calls (one per process: channels'
    # database_sync_to_async is thread-sensitive) keeps its connection instead of opening a new one for every call:
    # connect, PRAGMAs and function registration were a quarter of that thread's time under load. HTTP requests run
    # in threads of their own, which open a connection per request either way; it closes with its thread. (Django
    # advises against persistent connections under ASGI for servers with connection slots; SQLite has none.)
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
else:
    # Under ASGI Django's persistent connections are not reused across requests (Django's docs: use a pool). A pool
    # per worker process spares each trip to the database thread a new PostgreSQL connection (a backend fork).
    DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 10, minimum=0, maximum=1000)
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASE_POOL_SIZE:
        if DATABASES["default"]["CONN_MAX_AGE"]:
            raise ImproperlyConfigured("DATABASE_CONN_MAX_AGE must be 0 with DATABASE_POOL_SIZE (set it to 0 for none)")
        # CONN_HEALTH_CHECKS (above) makes the pool check a connection before handing it out: one PostgreSQL
        # dropped is replaced, not used.
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": DATABASE_POOL_SIZE}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "")
# Connections per Redis pool of a worker (channel layer, cache, stream state): kimichat/redis_options.py.
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 10_000, minimum=10)
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"REDIS_URL must start with redis://, rediss:// or unix://, got {REDIS_URL!r}")
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [redis_options.channel_layer_host(REDIS_URL, REDIS_MAX_CONNECTIONS)],
                "capacity": 1000,
                "expiry": 30,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": redis_options.cache_options(REDIS_MAX_CONNECTIONS),
        }
    }
else:
    # channels' in-memory layer, its expiry sweep at most once a second (kimichat/channel_layers.py).
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "kimichat.channel_layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}
    }
    # Rate-limit counters live here (three per active user): LocMem's default of 300 entries would evict live
    # counters (resetting a user's limits, and failing a send that incremented an evicted key) past 100 users.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "kimichat",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
FORMAT_MODULE_PATH = ["kimichat.formats"]  # short chart dates per language (MONTH_DAY_FORMAT)
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Attachments (docs/attachments.md): never served from a public URL; ATTACHMENT_STORAGE (JSON) points them
    # elsewhere, e.g. S3-compatible storage with django-storages.
    "attachments": json.loads(env_str("ATTACHMENT_STORAGE"))
    if env_str("ATTACHMENT_STORAGE")
    else {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(VAR_DIR / "media")}},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024, minimum=1024)
# The API's clients parse every answer as JSON, so a CSRF failure under /api/ is JSON too (pages keep Django's).
CSRF_FAILURE_VIEW = "conversations.views.errors.csrf_failure"

# Password guessing (conversations/services/accounts/login_throttle.py): failed log-ins allowed per account from one
# address, per address (any account) and per account (any address) within the window (seconds), counted in the cache
# (shared by every worker when REDIS_URL is set). Over a limit: refused (429 on the login page) until the window ends.
# The throttle backend comes first: it refuses a throttled attempt before ModelBackend looks at the password.
AUTHENTICATION_BACKENDS = [
    "conversations.services.accounts.backends.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS = env_int("LOGIN_FAILURES_PER_ACCOUNT_AND_ADDRESS", 5, minimum=1)
LOGIN_FAILURES_PER_IP = env_int("LOGIN_FAILURES_PER_IP", 20, minimum=1)
LOGIN_FAILURES_PER_ACCOUNT = env_int("LOGIN_FAILURES_PER_ACCOUNT", 100, minimum=1)
LOGIN_THROTTLE_SECONDS = env_int("LOGIN_THROTTLE_SECONDS", 15 * 60, minimum=1)
# Sign-up attempts per client address within the window: each one tells whether a username is taken.
SIGNUP_ATTEMPTS_PER_IP = env_int("SIGNUP_ATTEMPTS_PER_IP", 10, minimum=1)
SIGNUP_THROTTLE_SECONDS = env_int("SIGNUP_THROTTLE_SECONDS", 60 * 60, minimum=1)
# How many proxies we run in front of daphne, each appending to X-Forwarded-For (nginx alone: 1). The client address
# is the entry the outermost of them appended; 0 (no proxy): the TCP peer (client_address.py, docs/deployment.md).
TRUSTED_PROXY_HOPS = env_int("TRUSTED_PROXY_HOPS", 0, minimum=0, maximum=10)

# --- KimiChat ---------------------------------------------------------------------------------------------
# --- Sign-up and accounts (services/accounts/signup_modes.py, docs/admin.md) ---
# Who may sign up: open | invite | approval | closed. The default of the admin's "Sign-up settings", which override
# it at run time. SIGNUP_ENABLED=false (the older switch) means closed.
KIMICHAT_SIGNUP_ENABLED = env_bool("SIGNUP_ENABLED", True)
KIMICHAT_SIGNUP_MODE = env_str("SIGNUP_MODE", "open" if KIMICHAT_SIGNUP_ENABLED else "closed").lower()
if KIMICHAT_SIGNUP_MODE not in {"open", "invite", "approval", "closed"}:
    raise ImproperlyConfigured(f"SIGNUP_MODE must be open, invite, approval or closed, got {KIMICHAT_SIGNUP_MODE!r}")
if not KIMICHAT_SIGNUP_ENABLED and KIMICHAT_SIGNUP_MODE != "closed":
    raise ImproperlyConfigured(f"SIGNUP_ENABLED=false contradicts SIGNUP_MODE={KIMICHAT_SIGNUP_MODE}: unset one")
# Seed 003: the inviter gets 50 credits when someone signs up with their invite code.
KIMICHAT_INVITE_REWARD_CREDITS = env_int("INVITE_REWARD_CREDITS", 50, minimum=0)
# Sign-ups one user's invite codes may bring in all (staff codes have no limit), and how long a user's code lasts.
KIMICHAT_INVITES_PER_USER = env_int("INVITES_PER_USER", 5, minimum=0)
KIMICHAT_INVITE_DAYS = env_int("INVITE_DAYS", 14, minimum=1)
# Password reset mails (Django's flow): per client address and per e-mail address within the window. Over the
# address's limit: 429; over the e-mail's: the same "sent" page, and no mail (nobody can flood an inbox).
PASSWORD_RESETS_PER_IP = env_int("PASSWORD_RESETS_PER_IP", 5, minimum=1)
PASSWORD_RESETS_PER_EMAIL = env_int("PASSWORD_RESETS_PER_EMAIL", 3, minimum=1)
PASSWORD_RESET_THROTTLE_SECONDS = env_int("PASSWORD_RESET_THROTTLE_SECONDS", 60 * 60, minimum=1)
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 60 * 60 * 24, minimum=60)  # how long a link works
# E-mail: printed on the console unless EMAIL_HOST is set (then SMTP). EMAIL_BACKEND: console, smtp or a path.
EMAIL_HOST = env_str("EMAIL_HOST", "")
_email_backend = env_str("EMAIL_BACKEND", "smtp" if EMAIL_HOST else "console")
EMAIL_BACKEND = {
    "console": "django.core.mail.backends.console.EmailBackend",
    "smtp": "django.core.mail.backends.smtp.EmailBackend",
}.get(_email_backend, _email_backend)
EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", EMAIL_PORT == 587)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", EMAIL_PORT == 465)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL cannot both be true")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 20, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "KimiChat <noreply@localhost>")
# Two-factor log-in to the admin (TOTP, django-otp): a staff user with a confirmed device must give a code; with
# ADMIN_REQUIRE_2FA every staff user must enrol one before the admin opens.
ADMIN_REQUIRE_2FA = env_bool("ADMIN_REQUIRE_2FA", False)
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "KimiChat")

# Upstream. With no KIMI_API_KEY the app talks to the built-in offline Kimi-compatible server.
KIMI_API_KEY = env_secret("KIMI_API_KEY")
KIMI_OFFLINE = KIMI_API_KEY is None
OFFLINE_KIMI_PORT = env_int("OFFLINE_KIMI_PORT", 8765, minimum=1, maximum=65535)
OFFLINE_KIMI_KEY = "offline-kimi-key"  # not a secret: the offline server is loopback-only and fake
if KIMI_OFFLINE:
    KIMI_API_KEY = OFFLINE_KIMI_KEY
KIMI_BASE_URL = env_str("KIMI_BASE_URL", f"http://127.0.0.1:{OFFLINE_KIMI_PORT}/v1").rstrip("/")
if not KIMI_BASE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"KIMI_BASE_URL must be an http(s) URL, got {KIMI_BASE_URL!r}")
KIMI_API_FORMAT = env_str("KIMI_API_FORMAT", "openai")
if KIMI_API_FORMAT not in {"openai", "anthropic"}:
    raise ImproperlyConfigured(f"KIMI_API_FORMAT must be 'openai' or 'anthropic', got {KIMI_API_FORMAT!r}")
# Which provider's documented rules apply (output-limit field, thinking field, prompt_cache_key, model limits);
# empty: guessed from KIMI_BASE_URL (docs/kimi-client.md).
KIMI_PROVIDER = env_str("KIMI_PROVIDER", "")
if KIMI_PROVIDER not in {"", "moonshot", "moonshot-cn", "acedata", "kimi-k2.ai"}:
    raise ImproperlyConfigured(
        f"KIMI_PROVIDER must be one of moonshot, moonshot-cn, acedata, kimi-k2.ai (or empty), got {KIMI_PROVIDER!r}"
    )
KIMI_DEFAULT_MODEL = env_str("KIMI_DEFAULT_MODEL", "kimi-k2.6")
KIMI_FALLBACK_MODELS = env_list(
    "KIMI_FALLBACK_MODELS",
    [
        "kimi-k3",
        "kimi-k2.6",
        "kimi-k2.5",
        "kimi-k2-thinking-turbo",
        "kimi-k2-thinking",
        "kimi-k2-instruct-0905",
        "kimi-k2-0905-preview",
        "kimi-k2-turbo-preview",
        "kimi-k2-0711-preview",
        "kimi-k2",
        "kimi-k2-0905",
    ],
)
KIMI_CONNECT_TIMEOUT = env_float("KIMI_CONNECT_TIMEOUT", 30.0, minimum=0.1)
KIMI_READ_TIMEOUT = env_float("KIMI_READ_TIMEOUT", 600.0, minimum=0.1)
KIMI_MAX_RETRIES = env_int("KIMI_MAX_RETRIES", 3, minimum=0, maximum=10)
KIMI_RETRY_MAX_WAIT = env_float("KIMI_RETRY_MAX_WAIT", 30.0, minimum=0)
KIMI_MODELS_CACHE_SECONDS = env_int("KIMI_MODELS_CACHE_SECONDS", 300, minimum=0)
# Upstream connections per worker; each streaming answer holds one for its whole length.
KIMI_MAX_CONNECTIONS = env_int("KIMI_MAX_CONNECTIONS", 1000, minimum=1)
# What moves the upstream's bytes under httpx (conversations/kimi/transport.py): aiohttp's pool and C parser, or
# httpx's own (httpcore). docs/performance.md measures both.
KIMI_HTTP_TRANSPORT = env_str("KIMI_HTTP_TRANSPORT", "aiohttp")
if KIMI_HTTP_TRANSPORT not in {"aiohttp", "httpx"}:
    raise ImproperlyConfigured(f"KIMI_HTTP_TRANSPORT must be 'aiohttp' or 'httpx', got {KIMI_HTTP_TRANSPORT!r}")

# Generations.
KIMICHAT_MAX_MESSAGE_CHARS = env_int("MAX_MESSAGE_CHARS", 100_000, minimum=1)
KIMICHAT_CHECKPOINT_SECONDS = env_float("CHECKPOINT_SECONDS", 3.0, minimum=0.1)
KIMICHAT_COALESCE_MS = env_int("COALESCE_MS", 20, minimum=0, maximum=30)
# Under load (the event loop lagging) pieces wait for company up to this long: fewer, larger frames (relay.py).
KIMICHAT_COALESCE_MAX_MS = env_int("COALESCE_MAX_MS", 150, minimum=0, maximum=1000)
KIMICHAT_GENERATION_TIME_LIMIT = env_float("GENERATION_TIME_LIMIT", 900.0, minimum=1)
# The tool loop of one answer (docs/tools.md): at most this many upstream calls, and no new round after this long.
KIMICHAT_TOOL_MAX_ROUNDS = env_int("TOOL_MAX_ROUNDS", 4, minimum=1, maximum=20)
KIMICHAT_TOOL_MAX_SECONDS = env_float("TOOL_MAX_SECONDS", 300.0, minimum=1)
# A web search's fee: Moonshot's $0.005 per call [notes §8] in credits worth CREDIT_VALUE_USD each (kimi-k2.ai's
# Starter package is $0.0099 a credit, seed 003); a ModelPrice row's per_search overrides it per model.
KIMICHAT_CREDIT_VALUE_USD = Decimal(str(env_float("CREDIT_VALUE_USD", 0.01, minimum=0.000001)))
KIMICHAT_WEB_SEARCH_FEE_USD = Decimal(str(env_float("WEB_SEARCH_FEE_USD", 0.005, minimum=0)))

# Credits and limits (the credits issue); docs/credits.md describes each.
KIMICHAT_SIGNUP_CREDITS = env_int("SIGNUP_CREDITS", 100, minimum=0)
KIMICHAT_MAX_CONCURRENT_ANSWERS = env_int("MAX_CONCURRENT_ANSWERS", 3, minimum=1)
# Threads a worker prepares sends on with PostgreSQL (services/chat/sending.py). Each holds a pooled connection while
# it works, and the worker's database thread and its HTTP requests need theirs: by default 4, or fewer for a small
# pool (DATABASE_POOL_SIZE - 2). SQLite always uses the one database thread.
_pool_size = globals().get("DATABASE_POOL_SIZE") or 0
KIMICHAT_SEND_THREADS = env_int(
    "SEND_THREADS", max(1, min(4, _pool_size - 2)) if _pool_size else 4, minimum=1, maximum=64
)
if _pool_size and KIMICHAT_SEND_THREADS >= _pool_size:
    raise ImproperlyConfigured(
        f"SEND_THREADS ({KIMICHAT_SEND_THREADS}) must be below DATABASE_POOL_SIZE ({_pool_size}): each send thread "
        "holds a pooled connection, and the worker's other database calls need one too"
    )
# The most sends of new chats prepared together in one batch (services/chat/bulk_send.py), and the most /v1/ requests
# admitted together (services/apikeys/bulk_admit.py); 1 prepares each alone.
# Smaller batches let the first answers of a burst start while the next batch is prepared (docs/performance.md).
KIMICHAT_SEND_BATCH = env_int("SEND_BATCH", 50, minimum=1, maximum=500)
# Chat titles (services/personal/titles.py): written by a model after a chat's first answer; the model that answered
# unless TITLE_MODEL names a cheaper one; charged to the user as a `title` ledger row unless the operator absorbs it.
KIMICHAT_AUTO_TITLES = env_bool("AUTO_TITLES", True)
KIMICHAT_TITLE_MODEL = env_str("TITLE_MODEL", "")
KIMICHAT_TITLE_COST_ABSORBED = env_bool("TITLE_COST_ABSORBED", False)
# What one credit is worth in US dollars: the providers' published prices (services/billing/published_prices.py)
# become a model's default price at this rate. Through str() so "0.1" becomes Decimal("0.1"), not the float's digits.
KIMICHAT_CREDIT_VALUE_USD = Decimal(str(env_float("CREDIT_VALUE_USD", 0.01, minimum=0.000001)))
KIMICHAT_USE_PUBLISHED_PRICES = env_bool("USE_PUBLISHED_PRICES", True)
# Per answer, on top of the tokens, for a model with no ModelPrice row.
KIMICHAT_DEFAULT_PRICE_PER_REQUEST = Decimal(str(env_float("DEFAULT_PRICE_PER_REQUEST", 1.0, minimum=0)))
# Per million tokens for a model with no ModelPrice row and no published price (kimi-k3, a gateway's own ids):
# US$3 / US$15 at the default credit value, above every published Kimi price, so an unknown model is never a loss.
KIMICHAT_DEFAULT_PRICE_PER_MILLION_PROMPT = Decimal(str(env_float("DEFAULT_PRICE_PER_MILLION_PROMPT", 300, minimum=0)))
KIMICHAT_DEFAULT_PRICE_PER_MILLION_COMPLETION = Decimal(
    str(env_float("DEFAULT_PRICE_PER_MILLION_COMPLETION", 1500, minimum=0))
)
KIMICHAT_DEFAULT_PRICE_PER_MILLION_CACHED = Decimal(str(env_float("DEFAULT_PRICE_PER_MILLION_CACHED", 300, minimum=0)))
# How often (seconds) one worker reads the provider's balance for the admin dashboard; 0: only on demand.
KIMICHAT_PROVIDER_BALANCE_INTERVAL = env_int("PROVIDER_BALANCE_INTERVAL", 300, minimum=0)
# A WARNING is logged, and the dashboard shows an alert, when a read of the provider balance falls below this (in
# the provider's currency, as the balance is read); empty: no alert.
_alert_below = env_str("PROVIDER_BALANCE_ALERT_BELOW")
try:
    KIMICHAT_PROVIDER_BALANCE_ALERT_BELOW = Decimal(_alert_below) if _alert_below else None
except ArithmeticError:
    raise ImproperlyConfigured(f"PROVIDER_BALANCE_ALERT_BELOW must be a number, got {_alert_below!r}") from None
if KIMICHAT_PROVIDER_BALANCE_ALERT_BELOW is not None and not KIMICHAT_PROVIDER_BALANCE_ALERT_BELOW.is_finite():
    raise ImproperlyConfigured(f"PROVIDER_BALANCE_ALERT_BELOW must be a finite number, got {_alert_below!r}")
# How often (seconds) one worker grants the scheduled refills that are due; 0: only `manage.py refillcredits`.
KIMICHAT_REFILL_INTERVAL = env_int("REFILL_INTERVAL", 600, minimum=0)
# Requests per minute/hour/day by balance (seed 003); a tier applies when the balance is above its "above".
# RATE_LIMIT_TIERS takes the same list as JSON; conversations.services.billing.ratelimit validates it.
KIMICHAT_RATE_LIMIT_TIERS = [
    {"above": 0, "per_minute": 20, "per_hour": 600, "per_day": 5_000},
    {"above": 100, "per_minute": 60, "per_hour": 2_000, "per_day": 20_000},
    {"above": 1_000, "per_minute": 200, "per_hour": 6_000, "per_day": 50_000},
    {"above": 10_000, "per_minute": 500, "per_hour": 15_000, "per_day": 100_000},
]
if env_str("RATE_LIMIT_TIERS"):
    try:
        KIMICHAT_RATE_LIMIT_TIERS = json.loads(env_str("RATE_LIMIT_TIERS"))
    except ValueError as exc:
        raise ImproperlyConfigured(f"RATE_LIMIT_TIERS must be JSON: {exc}") from None

# Attachments (docs/attachments.md): per-file size, files per message, bytes per user, images' pixels and longest
# side, and the bounds on what a zip-based document (docx, xlsx, pptx, epub) may expand to.
KIMICHAT_ATTACHMENT_MAX_BYTES = env_int("ATTACHMENT_MAX_BYTES", 20 * 1024 * 1024, minimum=1, maximum=100 * 1024 * 1024)
KIMICHAT_ATTACHMENTS_PER_MESSAGE = env_int("ATTACHMENTS_PER_MESSAGE", 10, minimum=1, maximum=100)
KIMICHAT_ATTACHMENT_USER_QUOTA_BYTES = env_int("ATTACHMENT_USER_QUOTA_BYTES", 500 * 1024 * 1024, minimum=1)
KIMICHAT_ATTACHMENT_MAX_PIXELS = env_int("ATTACHMENT_MAX_PIXELS", 40_000_000, minimum=1)
KIMICHAT_ATTACHMENT_IMAGE_MAX_SIDE = env_int("ATTACHMENT_IMAGE_MAX_SIDE", 2048, minimum=16)
KIMICHAT_ATTACHMENT_MAX_UNZIPPED_BYTES = env_int("ATTACHMENT_MAX_UNZIPPED_BYTES", 200 * 1024 * 1024, minimum=1)
KIMICHAT_ATTACHMENT_MAX_ZIP_RATIO = env_int("ATTACHMENT_MAX_ZIP_RATIO", 100, minimum=1)
# Documents are read in child processes (their libraries hold the GIL): how many at once per worker; 0: in the
# upload's own thread (slows the worker's other users while a large file is read; docs/performance.md).
KIMICHAT_ATTACHMENT_EXTRACTION_PROCESSES = env_int("ATTACHMENT_EXTRACTION_PROCESSES", 2, minimum=0)

# --- Production ------------------------------------------------------------------------------------------------
# What `manage.py check --deploy` asks for; behind a TLS-terminating proxy that sets X-Forwarded-Proto.
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # probes speak plain HTTP to the worker itself
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    # The flag only allows submitting the domain to the browsers' preload list (hstspreload.org); it submits nothing.
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
KIMICHAT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; frame-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)

# Several workers: how long an answer's heartbeat may be silent before another worker's reaper takes it for dead,
# how often the reaper looks, and how long a SIGTERMed worker lets its answers finish before cutting them off.
KIMICHAT_HEARTBEAT_TTL = env_float("HEARTBEAT_TTL", 15.0, minimum=1.0)
KIMICHAT_REAP_INTERVAL = env_float("REAP_INTERVAL", 10.0, minimum=0.2)
KIMICHAT_SHUTDOWN_GRACE = env_float("SHUTDOWN_GRACE", 20.0, minimum=0.0)
# A temporary chat that no tab has shown for this long is deleted by the reaper (a reload must fit in it).
KIMICHAT_TEMPORARY_CHAT_GRACE = env_float("TEMPORARY_CHAT_GRACE", 60.0, minimum=1.0)

LOG_FORMAT = env_str("LOG_FORMAT", "plain" if DEBUG else "json")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json', got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "kimichat.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "kimichat.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}
