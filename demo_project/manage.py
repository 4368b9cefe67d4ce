#!/usr/bin/env python
"""The instant_signals demo: `scripts/demo` at the repository root sets it up and runs it."""
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # Run from a checkout without installing: make the repository's instant_signals importable.
    sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
