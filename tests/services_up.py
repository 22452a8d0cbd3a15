"""Exit 0 when the PostgreSQL and Redis URLs given on the command line both answer, else 1 (used by make)."""

import sys

import psycopg
import redis


def main(pg_url: str, redis_url: str) -> int:
    try:
        # Connect to the maintenance database: the test run creates its own test_<name> database.
        base = pg_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(base.replace("postgres://", "postgresql://", 1), connect_timeout=3):
            pass
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable", which is the answer
        print(f"not reachable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
