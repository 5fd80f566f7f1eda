# The Jobs' image: Python with the local stack's pinned clients (e2e/local/requirements.txt) and the
# local stack's own setup and seeding code, plus the suite's Polaris setup and ADBC checks.
# Build context: the repository root.
ARG PYTHON_IMAGE
FROM ${PYTHON_IMAGE}
COPY e2e/local/requirements.txt /e2e/requirements.txt
RUN pip install --no-cache-dir -q -r /e2e/requirements.txt
COPY e2e/local/setup.py e2e/local/seed.py e2e/local/keycloak/sqe-realm.json /e2e/
COPY e2e/kind/jobs/ /e2e/
USER 65532:65532
# No passwd entry for this UID: a writable HOME for anything that caches there.
ENV HOME=/tmp
WORKDIR /e2e
ENTRYPOINT ["python3"]
