FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config config
COPY durable durable
COPY runs runs
COPY approvals approvals
COPY templates templates
COPY static static
COPY manage.py ./
RUN pip install --no-cache-dir . && DURABLE_PRODUCTION=1 SECRET_KEY=build-only python manage.py collectstatic --noinput
EXPOSE 8000
# Web: daphne; workers: `python manage.py durable worker` (run as many as you like, on any machine).
CMD ["python", "-m", "daphne", "-b", "0.0.0.0", "-p", "8000", "--websocket_timeout", "-1", "config.asgi:application"]
