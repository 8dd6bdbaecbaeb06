"""A runtime child that runs out of memory or disk is reported as such, with the knob to turn, not a traceback.

Each case starts a real child process through the same stream_runtime every runner uses.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bundler.errors import MachineError, ResourceExhaustedError, TrainingError
from bundler.runners.launch import stream_runtime


def run_child(code: str, tmp_path: Path) -> None:
    stream_runtime([sys.executable, "-c", code], {"PATH": os.environ.get("PATH", "")}, tmp_path, "test")


def test_a_child_killed_by_the_oom_killer_names_the_knobs(tmp_path: Path) -> None:
    with pytest.raises(ResourceExhaustedError) as caught:
        run_child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", tmp_path)
    assert "killed by the kernel" in str(caught.value)
    assert "train.batch_size" in caught.value.hint and "train.max_seq_len" in caught.value.hint


def test_a_child_that_cannot_allocate_names_the_knobs_not_its_traceback(tmp_path: Path) -> None:
    code = "import resource; resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30)); bytearray(2**32)"
    with pytest.raises(ResourceExhaustedError) as caught:
        run_child(code, tmp_path)
    assert "Traceback" not in str(caught.value) and "model.tiny" in caught.value.hint


def test_a_child_that_fills_the_disk_is_a_machine_error(tmp_path: Path) -> None:
    code = "import errno, os; raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), 'adapter.safetensors')"
    with pytest.raises(MachineError) as caught:
        run_child(code, tmp_path)
    assert caught.value.errno_name == "ENOSPC" and "free space" in caught.value.hint


def test_any_other_crash_is_still_a_training_error_with_its_last_lines(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="ZeroDivisionError"):
        run_child("1 / 0", tmp_path)


def test_a_runtime_child_dies_with_a_build_killed_by_sigkill(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    marker = tmp_path / "child-pid"
    child_code = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent_code = (
        "import sys\nfrom pathlib import Path\nfrom bundler.runners.launch import stream_runtime\n"
        f"stream_runtime([sys.executable, '-c', {child_code!r}], {{'PATH': '/usr/bin:/bin'}}, "
        f"Path({str(tmp_path)!r}), 'x')\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)
    child = int(marker.read_text())
    parent.send_signal(signal.SIGKILL)  # no handler runs: only the kernel can end the child now
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            break
        if state == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the runtime child outlived a build killed by SIGKILL")
