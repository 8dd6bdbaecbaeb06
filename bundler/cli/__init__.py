"""The command line: one module per command group; parsing and printing only, the work is in the library.

Results go to stdout (`--json`: one JSON object with a `schema` key); logs and progress go to stderr.
Exit codes: 0 ok, 1 a check failed, 2 usage, config or input error. Nothing here imports torch: each
command imports the library it calls inside its body, so `bundler --help` loads click and nothing more.
"""

from __future__ import annotations

import click

from bundler import __version__
from bundler.cli import audit, project, publish, transfer, trust


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bundler")
def main() -> None:
    """Reproducible, auditable LoRA fine-tuning: lock, split, pack, run, verify, replay, publish."""


main.add_command(project.init)
main.add_command(project.build)
main.add_command(project.run)
main.add_command(project.record)
main.add_command(audit.verify)
main.add_command(audit.inspect)
main.add_command(publish.push)
main.add_command(project.split)
main.add_command(project.lock)
main.add_command(transfer.export)
main.add_command(transfer.import_)
main.add_command(audit.diff)
main.add_command(audit.replay)
main.add_command(trust.keygen)
main.add_command(trust.sign)
main.add_command(audit.check)
main.add_command(publish.compliance)
