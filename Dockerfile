# One image for every agentlog process; the role is the command, e.g. `gateway`,
# `worker model` (see docker-compose.yml). Settings come from AGENTLOG_* variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, read from pyproject.toml alone, so editing the code does not
# reinstall them. Every dependency ships manylinux wheels: no compiler in the image.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY agentlog_cli ./agentlog_cli
COPY streams ./streams
COPY schemas ./schemas
COPY projections ./projections
COPY gateway ./gateway
COPY workers ./workers
RUN pip install . \
    && cd / && rm -rf /src \
    && useradd --create-home --uid 10001 --user-group agentlog

USER agentlog
WORKDIR /home/agentlog

ENTRYPOINT ["agentlog"]
CMD ["--help"]
