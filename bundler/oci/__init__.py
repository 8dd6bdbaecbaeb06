"""Bundles in OCI registries: push an export tar as an artifact, fetch it back by digest, verified.

The artifact (an OCI image manifest with an artifactType, as ORAS and CNCF ModelPack write them):
- config: the OCI empty descriptor ({}), as the OCI artifacts guidance asks when there is no config;
- layer 1: the export tar, byte-identical to `bundler export BUNDLE -o FILE.tar`;
- then each run's adapter files as layers of their own, with CNCF ModelPack media types (weights, weight
  config) and `org.cncf.model.filepath`, and model.sig as a Sigstore bundle, so registry tools and
  ModelPack-aware runtimes see the adapter without unpacking the tar;
- annotations: Bundle-Id, format and run IDs, nothing time- or host-dependent, so the same bundle gives
  the same manifest bytes, hence the same digest, on any machine and any day.

Fetching trusts nothing the registry says: the manifest must hash to the digest asked for, every blob
is hashed while it streams and cut off past its declared size, and the tar then goes through exactly
the checks of a local tar (bundle.archive.import_bundle / verify_archive).

Modules: reference (the oci:// grammar), client (oras-py with bundler's retries and credentials),
push, fetch. Blob downloads are streamed here, not through oras' download_blob, which checks no digest.
This package sits on the hub's floor: it imports bundle/ and errors, and nothing above.
"""

from __future__ import annotations

SCHEME = "oci://"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.bundler.bundle.v1"
BUNDLE_LAYER = "application/vnd.bundler.bundle.v1.tar"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
# CNCF ModelPack (github.com/modelpack/model-spec, docs/spec.md and annotations.md) where they fit.
ADAPTER_MEDIA_TYPES = {
    "adapter_model.safetensors": "application/vnd.cncf.model.weight.v1.raw",
    "adapter_config.json": "application/vnd.cncf.model.weight.config.v1.raw",
}
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
FILEPATH = "org.cncf.model.filepath"
TITLE = "org.opencontainers.image.title"
BUNDLE_ID = "dev.bundler.bundle-id"
BUNDLE_FORMAT = "dev.bundler.bundle-format"
RUN_IDS = "dev.bundler.run-ids"
RUN_ID = "dev.bundler.run-id"
