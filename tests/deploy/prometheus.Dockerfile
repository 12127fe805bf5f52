# prometheus.Dockerfile - a local stand-in for the prom/prometheus image,
# for `make test-deploy` on machines without an image registry: Debian's
# prometheus binary (the build context holds it) on debian:bookworm-slim,
# laid out like the official image (entrypoint /bin/prometheus, user
# nobody, storage in /prometheus), so deploy/docker-compose.yml runs it
# unchanged.
FROM debian:bookworm-slim
COPY prometheus /bin/prometheus
RUN mkdir -p /prometheus /etc/prometheus \
 && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
VOLUME ["/prometheus"]
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
