"""The resolvers `bundler lock` drives (pip-tools, uv): their versions, target checks and runs.

How each resolver targets the image rather than the machine running `bundler lock`:
- pip-tools resolves with the pip that runs it, so it can only lock for this interpreter's
  Python and platform; a different target is refused (use resolver = "uv").
- uv resolves for any target: `--python-version X.Y --python-platform x86_64-manylinux_2_28`.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bundler.errors import EnvironmentSetupError, InputError, UnresolvableRequirementsError
from bundler.recipe.config import EnvironmentConfig
from bundler.recipe.pipsources import PackageSources

# uv needs a glibc floor for "linux"; 2.28 is what torch's x86_64 wheels are tagged with and every
# catalog image (Debian 12: glibc 2.36, Ubuntu 22.04: 2.35) is newer.
UV_PLATFORMS = {"linux/x86_64": "x86_64-manylinux_2_28", "linux/amd64": "x86_64-manylinux_2_28"}
_UNRESOLVABLE = re.compile(
    r"No matching distribution|Could not find a version|ResolutionImpossible|No solution found|"
    r"not found in the package registry|was not found in the provided package locations|"
    r"Invalid requirement|Expected package name|no versions of",
    re.IGNORECASE,
)


def resolver_version(resolver: str) -> str:
    from importlib import metadata

    if resolver == "pip-tools":
        return f"{metadata.version('pip-tools')} (pip {metadata.version('pip')})"
    try:
        return metadata.version("uv")
    except metadata.PackageNotFoundError:
        uv = uv_binary()
        out = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout
        return out.split()[1]


def uv_binary() -> str:
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]

        return str(find_uv_bin())
    except ImportError:
        found = shutil.which("uv")
        if not found:
            raise EnvironmentSetupError(
                'resolver = "uv" but uv is not installed',
                "pip install uv (or `pip install bundler-repro[uv]`)",
            ) from None
        return found


def source_args(sources: PackageSources) -> list[str]:
    args = ["--index-url", sources.index_url] if sources.index_url else ["--no-index"]
    for url in sources.extra_index_urls:
        args += ["--extra-index-url", url]
    for url in sources.find_links:
        args += ["--find-links", url]
    return args


def check_target(env: EnvironmentConfig, python: str) -> None:
    host_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    host_platform = f"{platform.system().lower()}/{platform.machine()}"
    if env.platform not in UV_PLATFORMS:
        raise InputError(
            f"environment.platform = {env.platform!r} is not supported",
            'use platform = "linux/x86_64"',
        )
    if env.resolver == "pip-tools" and (python != host_python or host_platform not in UV_PLATFORMS):
        raise EnvironmentSetupError(
            f"pip-tools resolves for the interpreter running it "
            f"(Python {host_python}, {host_platform}), "
            f"not for the target (Python {python}, {env.platform})",
            'set resolver = "uv" in [environment] (uv resolves for any target), '
            f"or run `bundler lock` under Python {python} on linux/x86_64",
        )


def _resolver_command(
    env: EnvironmentConfig, python: str, sources: PackageSources, offline: bool, output: Path
) -> list[str]:
    if env.resolver == "pip-tools":
        # --allow-unsafe pins setuptools: torch requires it; --require-hashes refuses the unpinned.
        return [
            sys.executable,
            "-m",
            "piptools",
            "compile",
            "--generate-hashes",
            "--allow-unsafe",
            "--strip-extras",
            "--no-header",
            "--no-emit-index-url",
            "--no-emit-find-links",
            "--no-emit-trusted-host",
            "--quiet",
            "--output-file",
            str(output),
            *source_args(sources),
            "requirements.in",
        ]
    # unsafe-best-match: consider every source as pip does, so both resolvers agree.
    command = [
        uv_binary(),
        "pip",
        "compile",
        "--generate-hashes",
        "--no-header",
        "--quiet",
        "--python-version",
        python,
        "--python-platform",
        UV_PLATFORMS[env.platform],
        "--index-strategy",
        "unsafe-best-match",
        "--output-file",
        str(output),
        *source_args(sources),
        "requirements.in",
    ]
    if offline:
        command.insert(3, "--offline")
    return command


def run_resolver(
    env: EnvironmentConfig,
    python: str,
    text: str,
    sources: PackageSources,
    offline: bool,
    requirements: Path,
) -> str:
    with tempfile.TemporaryDirectory(prefix="bundler-lock-") as tmp:
        work = Path(tmp)
        (work / "requirements.in").write_text(text, encoding="utf-8")
        output = work / "requirements.txt"
        child_env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in {
                "PIP_INDEX_URL",
                "PIP_EXTRA_INDEX_URL",
                "PIP_FIND_LINKS",
                "PIP_NO_INDEX",
                "UV_INDEX_URL",
                "UV_EXTRA_INDEX_URL",
                "UV_FIND_LINKS",
                "UV_INDEX",
            }
        }
        # Sources go on the command line, so the lock's header records exactly what was used.
        child_env["PIP_CONFIG_FILE"] = os.devnull
        command = _resolver_command(env, python, sources, offline, output)
        done = subprocess.run(command, cwd=work, env=child_env, capture_output=True, text=True)
        if done.returncode != 0:
            detail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            if _UNRESOLVABLE.search(done.stderr + done.stdout):
                raise UnresolvableRequirementsError(requirements, env.resolver, detail)
            raise EnvironmentSetupError(
                f"{env.resolver} failed (exit {done.returncode}):\n{detail}",
                "BUNDLER_DEBUG=1 shows the command; check the index is reachable",
            )
        return output.read_text(encoding="utf-8")
