"""Entry point: ``deepspeed launch/train.py --ds_config ds_configs/zero2.json [flags]``.

Also runs as ``python launch/train.py ...`` (a world of one process).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gnnzero.config import parse_config  # noqa: E402
from gnnzero.errors import exit_on_user_error  # noqa: E402


@exit_on_user_error
def main(argv=None) -> None:
    cfg = parse_config(argv)
    from gnnzero.run import run  # deepspeed is imported only after the flags parse

    run(cfg)


if __name__ == "__main__":
    main()
