# Nessie at the local stack's version with the local stack's backport (upstream fix #12704, see
# e2e/local/nessie/backport_readonly_arn_fix.py): the image is a Quarkus fast-jar under
# /deployments, so the patched class goes back into the jar that holds it (same name, same
# packages, so Quarkus's prebuilt class index stays valid). Build context: the repository root.
ARG NESSIE_IMAGE
ARG PYTHON_IMAGE
FROM ${NESSIE_IMAGE} AS nessie

FROM ${PYTHON_IMAGE} AS patch
COPY --from=nessie /deployments/lib /deployments/lib
COPY e2e/local/nessie/backport_readonly_arn_fix.py e2e/kind/images/patch_nessie_jar.py /patch/
RUN python3 /patch/patch_nessie_jar.py /deployments/lib /out/lib

FROM ${NESSIE_IMAGE}
COPY --from=patch --chown=185 /out/lib/ /deployments/lib/
