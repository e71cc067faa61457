"""The API tests' app, client and reference data, for the metrics and logging tests."""

from tests.api.conftest import app, client, db, seed  # noqa: F401
from tests.integration.conftest import make_pipeline, own_redis, redis_broker  # noqa: F401
