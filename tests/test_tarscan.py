"""Untrusted tars: every hostile header is refused by name, quickly and in bounded memory; a fuzz run never escapes.

Hostile archives are made byte by byte here (not with tarfile, which refuses to write most of them), from
the 2024-25 tarfile CVE shapes: negative sizes, giant PAX headers, sparse members, GNU long names, data
after the end-of-archive blocks.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.bundle.archive import export_bundle, import_bundle, verify_archive, verify_stream
from bundler.bundle.tarscan import BLOCK, TarLimits
from bundler.errors import BundlerError, InputError, UnsafeArchiveError
from tests.fixtures.bundles import full_bundle


def header(
    name: bytes, size: int = 0, flag: bytes = b"0", *, size_field: bytes | None = None, magic: bytes = b"ustar\x0000"
) -> bytes:
    """One 512-byte ustar header with a correct checksum (any field can be made hostile)."""
    block = bytearray(BLOCK)
    block[0 : len(name[:100])] = name[:100]
    block[100:108] = b"0000644\x00"
    block[108:116] = b"0000000\x00"
    block[116:124] = b"0000000\x00"
    block[124:136] = size_field if size_field is not None else b"%011o\x00" % size
    block[136:148] = b"00000000000\x00"
    block[156:157] = flag
    block[257:265] = magic
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def member(name: bytes, data: bytes, flag: bytes = b"0") -> bytes:
    return header(name, len(data), flag) + data + bytes(-len(data) % BLOCK)


def pax(records: bytes, name: bytes = b"PaxHeader") -> bytes:
    return member(name, records, b"x")


def record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + len(str(len(body)))
    length = len(body) + len(str(length))
    return str(length).encode() + body


END = bytes(2 * BLOCK)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("export")
    bundle = full_bundle(tmp / "bundle", tmp / "run")
    export_bundle(bundle, tmp / "b.tar")
    return (tmp / "b.tar").read_bytes()


def judged(data: bytes, tmp_path: Path) -> BaseException | None:
    """Verify and import `data`; return what was raised (or None), asserting time and memory bounds."""
    (tmp_path / "x.tar").write_bytes(data)
    tracemalloc.start()
    started = time.perf_counter()
    raised: BaseException | None = None
    try:
        verify_archive(tmp_path / "x.tar")
    except BundlerError as exc:
        raised = exc
    try:
        import_bundle(tmp_path / "x.tar", tmp_path / "sandbox" / "out")
    except BundlerError as exc:
        raised = raised or exc
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    assert peak < 100 * 1024 * 1024, f"{peak} bytes"
    return raised


HOSTILE = {
    "negative size (base-256)": (header(b"b/x", size_field=b"\xff" * 12) + END, "base-256"),
    "size not octal": (header(b"b/x", size_field=b"-0000000001\x00") + END, "not octal"),
    "size past the end": (header(b"b/x", 1 << 30) + END, "past the end of the archive"),
    "160 KB PAX header of digits": (pax(b"9" * 160_000) + member(b"b/x", b"") + END, "PAX header of 160000 bytes"),
    "PAX record longer than its header": (pax(b"99999 path=x\n") + member(b"b/x", b"") + END, "bad length"),
    "PAX record with a zero length": (pax(b"0 path=x\n") + member(b"b/x", b"") + END, "bad length"),
    "sparse member by PAX": (pax(record("GNU.sparse.size", "2147483648")) + member(b"b/x", b"") + END, "sparse"),
    "GNU sparse type": (member(b"b/x", b"", b"S") + END, "GNU sparse member"),
    "GNU long name": (member(b"././@LongLink", b"b/" + b"a" * 300 + b"\x00", b"L") + END, "GNU long name"),
    "GNU magic": (header(b"b/x", magic=b"ustar  \x00") + END, "not POSIX ustar"),
    "PAX linkpath": (pax(record("linkpath", "/etc/passwd")) + member(b"b/x", b"") + END, "linkpath"),
    "global PAX header": (member(b"g", record("comment", "x"), b"g") + END, "PAX global header"),
    "member after the end blocks": (
        member(b"b/bagit.txt", b"x") + END + member(b"b/late", b"late"),
        "data after the end",
    ),
    "one end block only": (member(b"b/bagit.txt", b"x") + bytes(BLOCK), "one end-of-archive block"),
    "bad checksum": (header(b"b/x")[:148] + b"0000000\x00" + header(b"b/x")[156:] + END, "checksum"),
    "gzip stream": (b"\x1f\x8b\x08\x00" + bytes(600), "gzip stream"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers_are_refused_by_name_fast_and_small(tmp_path: Path, case: str) -> None:
    data, expected = HOSTILE[case]
    raised = judged(data, tmp_path)
    assert isinstance(raised, InputError), raised
    assert expected in str(raised)
    assert not (tmp_path / "sandbox" / "out").exists()


def test_too_many_members_and_long_names_are_refused(tmp_path: Path) -> None:
    many = b"".join(member(b"b/f%d" % i, b"") for i in range(50)) + END
    with pytest.raises(UnsafeArchiveError, match="more than the limit of 10"):
        verify_stream(io.BytesIO(many), tmp_path / "m.tar", TarLimits(max_members=10))
    long = pax(record("path", "b/" + "n" * 5000)) + member(b"b/x", b"") + END
    with pytest.raises(UnsafeArchiveError, match="over the limit of 4096"):
        verify_stream(io.BytesIO(long), tmp_path / "l.tar")


def test_many_deep_names_are_refused_in_bounded_time(tmp_path: Path) -> None:
    deep = "b/" + "/".join(["d"] * 2000)  # 4001 bytes: under the name limit, far over the depth limit
    data = b"".join(pax(record("path", f"{deep}{i}")) + member(b"x", b"") for i in range(200)) + END
    assert len(data) <= 1 << 20
    raised = judged(data, tmp_path)
    assert isinstance(raised, UnsafeArchiveError) and "over the limit of 64" in str(raised)


def test_a_sparse_member_claiming_2_gb_is_never_written(tmp_path: Path, exported: bytes) -> None:
    body = exported.rstrip(b"\x00")
    body += bytes(-len(body) % BLOCK)
    planted = pax(record("GNU.sparse.realsize", str(2 << 30)) + record("GNU.sparse.map", "0,1")) + member(b"x/big", b"")
    raised = judged(body + planted + END, tmp_path)
    assert isinstance(raised, UnsafeArchiveError) and "sparse" in str(raised)


def test_cli_exits_2_and_names_the_rule_within_bounds(tmp_path: Path) -> None:
    data, _ = HOSTILE["negative size (base-256)"]
    (tmp_path / "neg.tar").write_bytes(data)
    for args in (
        ["verify", str(tmp_path / "neg.tar")],
        ["import", str(tmp_path / "neg.tar"), "--out", str(tmp_path / "o")],
    ):
        script = (
            "import resource, subprocess, sys; "
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=30); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(r.stderr)"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, sys.executable, "-m", "bundler", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
            timeout=60,
        ).stdout
        code, rss_kb = (int(v) for v in out.split("\n", 1)[0].split())
        assert code == 2 and "base-256" in out and "internal error" not in out
        assert rss_kb < 100 * 1024, f"{rss_kb} KB"


def test_import_removes_stale_partials_a_killed_import_left(tmp_path: Path, exported: bytes) -> None:
    (tmp_path / "b.tar").write_bytes(exported)
    stale = tmp_path / ".out.abc123.partial"
    (stale / "data").mkdir(parents=True)
    import_bundle(tmp_path / "b.tar", tmp_path / "out")
    assert not stale.exists() and (tmp_path / "out" / "bagit.txt").is_file()


# --- fuzzing: mutations of a real export --------------------------------------------------------

MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("field"), st.integers(0, 1 << 10), st.sampled_from([0, 100, 124, 136, 148, 156, 257, 345])),
    st.tuples(st.just("pax"), st.integers(0, 1 << 10), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 64), st.integers(0, 255)),
)
FIELD_VALUES = [
    b"\xff" * 12,
    b"77777777777\x00",
    b"-1\x00",
    b"x",
    b"5",
    b"S",
    b"L",
    b"2",
    b"ustar  \x00",
    b"\x00" * 12,
    b"../../escape\x00",
    b"/etc/passwd\x00",
]
PAX_RECORDS = [
    ("path", "../../escape"),
    ("path", "/abs"),
    ("path", "x" * 5000),
    ("size", "99999999999999999999"),
    ("size", "-1"),
    ("GNU.sparse.map", "0,1"),
    ("linkpath", "/etc/passwd"),
    ("mtime", "1.5"),
    ("comment", "hello"),
]


def header_offsets(data: bytes | bytearray) -> list[int]:
    """Where the headers of a (possibly already mutated) archive start, as far as they can be followed."""
    offsets, at = [], 0
    while at + BLOCK <= len(data) and data[at : at + BLOCK] != bytes(BLOCK) and len(offsets) < 10_000:
        offsets.append(at)
        digits = bytes(data[at + 124 : at + 136]).strip(b" \x00")
        size = int(digits, 8) if digits and all(48 <= c <= 55 for c in digits) else 0
        at += BLOCK + -(-size // BLOCK) * BLOCK
    return offsets


def with_checksum(block: bytes | bytearray) -> bytes:
    block = bytearray(block)
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    """Apply mutations; header-aware ones (field, pax) keep checksums valid so they reach past the checksum."""
    out = bytearray(data)
    for kind, where, value in mutations:
        if not out:
            break
        headers = header_offsets(out)
        if kind == "flip":
            out[where % len(out)] ^= value
        elif kind == "cut":
            del out[where % len(out) :]
        elif kind == "field" and headers:
            at = headers[where % len(headers)]
            patch = FIELD_VALUES[(where // len(headers)) % len(FIELD_VALUES)]
            block = bytearray(out[at : at + BLOCK])
            block[value : value + len(patch)] = patch[: BLOCK - value]
            out[at : at + BLOCK] = block[:BLOCK] if value == 148 else with_checksum(block[:BLOCK])
        elif kind == "pax" and headers:
            key, text = PAX_RECORDS[value % len(PAX_RECORDS)]
            at = headers[where % len(headers)]
            out[at:at] = pax(record(key, text))
        elif kind == "insert":
            at = (where * BLOCK) % max(len(out), 1)
            out[at:at] = bytes([value % 256]) * BLOCK
    return bytes(out)


@settings(
    max_examples=int(os.environ.get("BUNDLER_FUZZ_EXAMPLES", "200")),
    deadline=2000,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_fuzz_reader_never_hangs_crashes_or_writes_outside_its_temp_dir(
    tmp_path: Path, exported: bytes, mutations: list[tuple[str, int, int]]
) -> None:
    work = tmp_path / f"case-{os.urandom(4).hex()}"
    work.mkdir()
    data = mutate(exported, mutations)
    before = set(tmp_path.iterdir())
    raised = judged(data, work)
    assert raised is None or isinstance(raised, BundlerError)
    assert set(tmp_path.iterdir()) == before  # nothing beside the case's own dir
    left = sorted(p.name for p in work.iterdir())
    assert left in (["x.tar"], ["sandbox", "x.tar"])
    sandbox = work / "sandbox"
    if sandbox.exists():
        assert [p.name for p in sandbox.iterdir()] in ([], ["out"])  # no .partial outlives the command


def test_an_import_terminated_with_sigterm_leaves_no_partial_directory(tmp_path: Path) -> None:
    import signal

    bundle = full_bundle(tmp_path / "bundle", tmp_path / "run")
    from tests.fixtures.bundles import add_fake_run

    add_fake_run(bundle, tmp_path / "big", payload=os.urandom(1 << 20) * 64)  # 64 MiB: the import takes a while
    export_bundle(bundle, tmp_path / "b.tar")
    target = tmp_path / "target"
    target.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "bundler", "import", str(tmp_path / "b.tar"), "--out", str(target / "out")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".partial") for p in target.iterdir()):
        assert process.poll() is None, "the import finished before it could be terminated"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert list(target.iterdir()) == []
