"""The host/runtime contract, written once. The runtime owns it (it ships inside every bundle); the host
(runners, Dockerfile, check, errors.py) imports it from this file instead of restating it.

The host starts `python -m runtime <recipe> <out>` (or `runtime.check`) with DETERMINISM_ENV set
before the interpreter starts and the BUNDLER_* variables below; the runtime answers on stdout with
EVENT_PREFIX lines (progress, JSON) and, for a problem with its input, one ERROR_PREFIX line
({"kind", "message", "hint"}) before exiting RUNTIME_EXIT_INPUT. The host turns that line into its
own input error (EXIT_INPUT); any other non-zero exit is a crash (EXIT_FAILED, with the log tail).
"""

EVENT_PREFIX = "BUNDLER_EVENT "
ERROR_PREFIX = "BUNDLER_ERROR "

# Set before the interpreter starts: Python reads PYTHONHASHSEED only at start-up and cuBLAS reads its
# workspace config when the first handle is made. env.json records them as env.<NAME>.
DETERMINISM_ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "PYTHONHASHSEED": "0"}

# What the host passes besides the command line.
MODEL_DIR_ENV = "BUNDLER_MODEL_DIR"
DATA_DIR_ENV = "BUNDLER_DATA_DIR"

# Exit codes. The CLI's: 0 ok, 1 a check failed, 2 bad input or machine (errors.py reads them here).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
# The runtime's own: 2 is what its entry points return for a wrong command line (usage), so an input
# problem it reported with an ERROR_PREFIX line exits 3; the host maps that to EXIT_INPUT.
EXIT_USAGE = 2
RUNTIME_EXIT_INPUT = 3
