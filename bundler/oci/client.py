"""The registry client: oras-py's Registry with bundler's retry policy and credentials.

oras-py does the distribution API (auth challenges, docker's config.json, blob uploads); bundler replaces
only its retry decorator, which sleeps 3 s to 83 s between five attempts on any error, with a bounded one.
Credentials are read at the moment of use from BUNDLER_REGISTRY_USERNAME/PASSWORD or docker's
config.json ($DOCKER_CONFIG or ~/.docker) and live only in the client's memory.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from bundler.errors import RegistryRequestError, RegistryUnavailableError
from bundler.oci.reference import OciReference

# Credentials: these two, else docker's config.json ($DOCKER_CONFIG or ~/.docker); read at use, never kept.
USERNAME_ENV, PASSWORD_ENV = "BUNDLER_REGISTRY_USERNAME", "BUNDLER_REGISTRY_PASSWORD"
# Hosts spoken to over plain HTTP besides loopback (docker's "insecure-registries"), comma-separated.
INSECURE_ENV = "BUNDLER_REGISTRY_INSECURE"
RETRY_DELAYS_S = (0.5, 2.0, 5.0)
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


def registry_client(ref: OciReference) -> Any:
    """An oras Registry for `ref`'s host with credentials from the environment or docker's config.json."""
    if "jsonschema" not in sys.modules:
        # oras.provider imports jsonschema, whose format checks import rfc3987_syntax, which compiles 38
        # lark grammars at import: 4.4 of the 4.8 s `import oras.provider` takes (python -X importtime,
        # 2026-11-30, this machine under load). jsonschema skips that checker when the import fails, and
        # oras validates no IRI formats, so it is marked absent.
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    import oras.provider
    import requests

    host = ref.registry.split(":")[0].strip("[]")
    insecure = host in ("127.0.0.1", "localhost", "::1") or ref.registry in _insecure_hosts()

    class Registry(oras.provider.Registry):  # type: ignore[misc]
        def do_request(self, url: str, method: str = "GET", data: Any = None, headers: Any = None,
                       json: Any = None, stream: bool = False) -> requests.Response:  # fmt: skip
            # oras' own do_request minus its retry decorator; _retrying bounds the waiting instead.
            unwrapped = oras.provider.Registry.do_request.__wrapped__
            what = f"{method} {url.split('/v2/', 1)[-1].split('?')[0]}"
            try:
                response = _retrying(lambda: unwrapped(self, url, method, data, dict(headers or {}), json, stream))
            except ValueError as exc:  # oras: "Cannot respond to request for authentication."
                raise RegistryRequestError(str(ref), what, 401, str(exc),
                                           _LOGIN_HINT.format(registry=ref.registry)) from None  # fmt: skip
            if response.status_code in (401, 403):  # still refused after oras answered the challenge
                raise refused(ref, what, response)
            return response

    def _retrying(send: Any) -> requests.Response:
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None), start=1):
            try:
                response = send()
            except (requests.ConnectionError, requests.Timeout) as exc:
                if delay is None:
                    raise RegistryUnavailableError(ref.registry, attempt, reason(exc)) from None
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                if delay is None:
                    raise RegistryUnavailableError(ref.registry, attempt, registry_error(response))
            time.sleep(delay)
        raise AssertionError("unreachable")

    # Which scheme the registry asks for decides the oras auth backend: Basic (htpasswd) or token.
    prefix = "http" if insecure else "https"
    ping = _retrying(lambda: requests.get(f"{prefix}://{ref.registry}/v2/", timeout=30))
    challenge = ping.headers.get("Www-Authenticate", "") if ping.status_code == 401 else ""
    basic = challenge.lower().startswith("basic")
    client = Registry(hostname=ref.registry, insecure=insecure, auth_backend="basic" if basic else "token")
    username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    if username and password:
        client.auth.set_basic_auth(username, password)
    else:
        docker_config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
        if docker_config.is_file():
            client.auth.load_configs(client.get_container(container_name(ref)), configs=[str(docker_config)])
        if not getattr(client.auth, "_basic_auth", None) and basic:
            client.auth.set_basic_auth("", "")  # answers the challenge so the registry's 401 is what we report
    return client


def _insecure_hosts() -> set[str]:
    return {h.strip() for h in os.environ.get(INSECURE_ENV, "").split(",") if h.strip()}


def container_name(ref: OciReference) -> str:
    return f"{ref.registry}/{ref.repository}" + (f"@{ref.digest}" if ref.digest else f":{ref.tag or 'latest'}")


def reason(exc: BaseException) -> str:
    text = str(exc)
    found = re.search(r"\[Errno [^\]]+\][^')\"]*|Connection refused|timed out|Name or service not known", text)
    return f"{type(exc).__name__}: {found.group(0) if found else text[:200]}"


def registry_error(response: Any) -> str:
    """The registry's own error: its OCI error body (code: message), else the status line."""
    try:
        errors = response.json().get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
        if parts:
            return "; ".join(parts)[:300]
    except ValueError:
        pass
    challenge = response.headers.get("Www-Authenticate")  # a HEAD's 401 has no body, only this
    return f"{response.status_code} {response.reason}" + (f", Www-Authenticate: {challenge}" if challenge else "")


_LOGIN_HINT = f"set {USERNAME_ENV} and {PASSWORD_ENV}, or `docker login {{registry}}`; nothing was written"


def refused(ref: OciReference, what: str, response: Any) -> RegistryRequestError:
    status = response.status_code
    hint = _LOGIN_HINT.format(registry=ref.registry) if status in (401, 403) else ""
    return RegistryRequestError(str(ref), what, status, registry_error(response), hint)
