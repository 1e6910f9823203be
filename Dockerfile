# hellotcp as a container image: the package installed as a wheel into a
# slim Python, run by an unprivileged user, `twist hellotcp` as PID 1.
#
#   docker build -t hellotcp:0.1.0 .
#   docker run --rm -p 5000:5000 hellotcp:0.1.0
#
# twist is PID 1 and handles SIGTERM itself (a graceful stop: exchanges in
# flight finish, then exit 0), and, with --workers, reaps its workers; no
# init is needed.  `docker run --init` works as well.  See docs/operations.md
# ("Containers and Kubernetes") and contrib/kubernetes/.

FROM python:3.12-slim AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hellotcp ./hellotcp
COPY twisted ./twisted
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
COPY --from=wheels /wheels /wheels
# No index at run time: the wheels built above are everything installed.
# Twisted's plugin cache is written now, while the file system is writable
# (the pod runs with a read-only root file system).
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/hellotcp-*.whl \
    && rm -rf /wheels \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin hellotcp
USER 10001
# 5000 plain, 5001 TLS (with --tls-listen), 9100 metrics (with --metrics).
EXPOSE 5000 5001 9100
STOPSIGNAL SIGTERM
# All interfaces inside the container: the pod's network is its boundary.
ENTRYPOINT ["twist", "--log-format=json", "hellotcp"]
CMD ["--listen", "tcp:5000"]
