# One image for every role (web, worker, beat, migrate); docker-compose.yml picks the command.

# The API docs viewer, exactly as package-lock.json pins it (no install scripts run); only its
# two files reach the final image.
FROM node:20-slim AS frontend
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --omit=dev --no-audit --no-fund --loglevel=error

FROM python:3.11-slim

# Unbuffered output so logs reach `docker compose logs` as they happen; no .pyc in the image.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    INSTANCE_DIR=/app/instance

# The locked dependencies first (their own layer, rebuilt only when the lock changes): exactly
# the files whose hashes the lock holds, every indirect dependency included.
COPY requirements/run.lock /src/requirements/run.lock
RUN pip install --require-hashes -r /src/requirements/run.lock

# Copy only what the package is built from: never local data (instance/), the virtualenv or .git.
COPY pyproject.toml config.py bootstrap.py worker.py /src/
COPY scheduler /src/scheduler
COPY notifications /src/notifications
COPY web /src/web
# Served by the app itself from /static/vendor/swagger-ui/ (same origin, under its CSP).
COPY --from=frontend /build/node_modules/swagger-ui-dist/swagger-ui-bundle.js \
     /build/node_modules/swagger-ui-dist/swagger-ui.css \
     /src/web/static/vendor/swagger-ui/
# Installed as a regular package without resolving anything (its dependencies are all in place),
# then the build tree is dropped, so every process imports the same installed code whatever its
# working directory.
RUN pip install --no-deps /src && rm -rf /src

WORKDIR /app
# Alembic runs from here (`alembic upgrade head` in the migrate service).
COPY alembic.ini ./
COPY migrations ./migrations

# Run as an unprivileged user; it owns only instance/ (beat's schedule file lives there, and
# the what-if runs' files in instance/simulations, a volume the web app and workers share: a
# new volume takes this directory's owner).
RUN useradd --create-home --uid 10001 app \
    && mkdir -p /app/instance/simulations \
    && chown -R app:app /app/instance
USER app

EXPOSE 5000
CMD ["gunicorn", "--config=python:web.gunicorn_conf", "--bind=0.0.0.0:5000", "--workers=2", \
     "--access-logfile=-", "web:create_app()"]
