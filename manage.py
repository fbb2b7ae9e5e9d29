#!/usr/bin/env python
"""Django's command-line utility for peftlab."""

import os
import sys


def main() -> None:
    """Run a management command; a misconfiguration ends it with one line, not a traceback."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peftlab.settings")
    from peftlab.commands import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
