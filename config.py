"""Settings read from the environment (12-factor): one immutable object, no secrets in code.

Every variable is optional; the defaults give the embedded setup used by `make run`
(SQLite for data and for the Celery broker, messages written to a local outbox).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_INSTANCE_DIR = PROJECT_ROOT / "instance"


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a running instance (web, worker and beat alike)."""

    database_url: str
    broker_url: str
    secret_key: str
    public_base_url: str = "http://127.0.0.1:5000"
    instance_dir: Path = DEFAULT_INSTANCE_DIR
    dispatch_interval_seconds: float = 30.0
    reminder_lease_seconds: float = 300.0
    reconcile_interval_seconds: float = 60.0
    sql_echo: bool = False
    session_cookie_secure: bool = False
    # A staff session ends after this long without a request, and this long after sign-in
    # whatever its use: a copied cookie is worth little for long.
    session_idle_minutes: float = 30.0
    session_max_hours: float = 12.0
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_base_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from: str | None = None
    # How many reverse proxies in front of the web app add X-Forwarded-For / -Proto; their
    # values are believed only this many hops deep.
    trusted_proxies: int = 0
    # Where the per-address limits of the patient link and feed URLs are counted (a Flask-Limiter
    # storage URI): Redis shares one count between every web process; memory:// counts in each.
    rate_limit_storage_uri: str = "memory://"
    # A patient's link stops working this many days after the course's last session (and at
    # once when the course is cancelled or the link revoked).
    patient_link_days_after_last_fraction: int = 7
    # What-if simulation runs keep their files here, one subdirectory per run. None: the
    # `simulations` folder of the instance directory.
    simulation_dir: Path | None = None
    # Health (see scheduler.health). None: derived from dispatch_interval_seconds, so a
    # faster tick in a test or a drill tightens them too.
    health_beat_stale_seconds: float | None = None
    health_worker_stale_seconds: float | None = None
    health_reminder_lag_seconds: float | None = None
    health_broker_timeout_seconds: float = 2.0

    @property
    def simulations_path(self) -> Path:
        return self.simulation_dir or self.instance_dir / "simulations"

    @property
    def beat_stale_after(self) -> float:
        """Seconds without a beat tick after which beat counts as stopped."""
        if self.health_beat_stale_seconds is not None:
            return self.health_beat_stale_seconds
        # Three missed ticks, and never under 15 s: one late tick on a busy host is not an outage.
        return max(3 * self.dispatch_interval_seconds, 15.0)

    @property
    def worker_stale_after(self) -> float:
        """Seconds without a worker's heartbeat after which no worker counts as running."""
        if self.health_worker_stale_seconds is not None:
            return self.health_worker_stale_seconds
        # A worker stamps every interval, as beat ticks: the same allowance.
        return max(3 * self.dispatch_interval_seconds, 15.0)

    @property
    def reminder_lag_limit(self) -> float:
        """Seconds a due reminder may stay unsent before readiness fails."""
        if self.health_reminder_lag_seconds is not None:
            return self.health_reminder_lag_seconds
        # Ten dispatch rounds, at least five minutes: long enough for a provider's brief
        # hiccup and its retry, short enough that a same-day reminder is still useful.
        return max(10 * self.dispatch_interval_seconds, 300.0)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _default_secret(instance_dir: Path) -> str:
    """A per-installation random key kept in instance/ so sessions survive a restart.

    Production deployments set SECRET_KEY; this only serves the embedded default.
    """
    import secrets

    path = instance_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build Settings from an environment mapping (os.environ by default)."""
    env = dict(os.environ if env is None else env)
    instance_dir = Path(env.get("INSTANCE_DIR") or DEFAULT_INSTANCE_DIR)
    database_url = env.get("DATABASE_URL") or f"sqlite:///{instance_dir / 'sbrt.db'}"
    # psycopg 3 is the driver we ship; accept the common postgres:// spellings too.
    for prefix in ("postgres://", "postgresql://"):
        if database_url.startswith(prefix):
            database_url = "postgresql+psycopg://" + database_url[len(prefix) :]
    broker_url = env.get("BROKER_URL") or f"sqla+sqlite:///{instance_dir / 'broker.db'}"
    secret_key = env.get("SECRET_KEY") or _default_secret(instance_dir)
    trusted_proxies = int(env.get("TRUSTED_PROXIES") or 0)
    if trusted_proxies < 0:
        raise ValueError("TRUSTED_PROXIES must be 0 or more")
    public_base_url = (env.get("PUBLIC_BASE_URL") or "http://127.0.0.1:5000").rstrip("/")
    # Served over https, the session cookie must never travel over plain http; an explicit
    # setting wins (e.g. off for a local https test without TLS in front).
    cookie_secure = _bool(
        env.get("SESSION_COOKIE_SECURE"), public_base_url.lower().startswith("https://")
    )
    session_idle_minutes = float(env.get("SESSION_IDLE_MINUTES") or 30)
    session_max_hours = float(env.get("SESSION_MAX_HOURS") or 12)
    if session_idle_minutes <= 0 or session_max_hours <= 0:
        raise ValueError("SESSION_IDLE_MINUTES and SESSION_MAX_HOURS must be more than 0")
    try:
        link_days = int(env.get("PATIENT_LINK_DAYS_AFTER_LAST_FRACTION") or 7)
    except ValueError:
        link_days = -1
    if not 0 <= link_days <= 90:
        # 0 ends the links with the last session; beyond a quarter of a year the page would
        # keep showing a finished schedule long after anyone needs it.
        raise ValueError("PATIENT_LINK_DAYS_AFTER_LAST_FRACTION must be from 0 to 90")
    # By default the limits share the broker's Redis when there is one. RATE_LIMIT_REDIS_URL is
    # this setting's earlier name, still honoured so existing deployments keep a shared count.
    rate_limit_uri = (
        env.get("RATE_LIMIT_STORAGE_URI")
        or env.get("RATE_LIMIT_REDIS_URL")
        or (broker_url if broker_url.split(":", 1)[0] in ("redis", "rediss") else "memory://")
    )
    return Settings(
        database_url=database_url,
        broker_url=broker_url,
        secret_key=secret_key,
        public_base_url=public_base_url,
        instance_dir=instance_dir,
        dispatch_interval_seconds=float(env.get("DISPATCH_INTERVAL_SECONDS") or 30),
        reminder_lease_seconds=float(env.get("REMINDER_LEASE_SECONDS") or 300),
        reconcile_interval_seconds=float(env.get("RECONCILE_INTERVAL_SECONDS") or 60),
        sql_echo=_bool(env.get("SQL_ECHO")),
        session_cookie_secure=cookie_secure,
        session_idle_minutes=session_idle_minutes,
        session_max_hours=session_max_hours,
        twilio_account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
        twilio_auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
        twilio_from_number=env.get("TWILIO_FROM_NUMBER") or None,
        twilio_messaging_service_sid=env.get("TWILIO_MESSAGING_SERVICE_SID") or None,
        twilio_base_url=env.get("TWILIO_BASE_URL") or None,
        smtp_host=env.get("SMTP_HOST") or None,
        smtp_port=int(env.get("SMTP_PORT") or 587),
        smtp_username=env.get("SMTP_USERNAME") or None,
        smtp_password=env.get("SMTP_PASSWORD") or None,
        smtp_from=env.get("SMTP_FROM") or None,
        trusted_proxies=trusted_proxies,
        rate_limit_storage_uri=rate_limit_uri,
        patient_link_days_after_last_fraction=link_days,
        simulation_dir=Path(env["SIMULATION_DIR"]) if env.get("SIMULATION_DIR") else None,
        health_beat_stale_seconds=_positive(env, "HEALTH_BEAT_STALE_SECONDS"),
        health_worker_stale_seconds=_positive(env, "HEALTH_WORKER_STALE_SECONDS"),
        health_reminder_lag_seconds=_positive(env, "HEALTH_REMINDER_LAG_SECONDS"),
        health_broker_timeout_seconds=_positive(env, "HEALTH_BROKER_TIMEOUT_SECONDS") or 2.0,
    )


def _positive(env: dict[str, str], name: str) -> float | None:
    """An optional number of seconds above zero; None when unset."""
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise ValueError(f"{name} must be a number of seconds above 0")
    return value
