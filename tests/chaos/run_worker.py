"""`python -m tests.chaos.run_worker durable worker`: `manage.py durable worker` with the crash tests'
workflows (and the fault hooks their CHAOS_* variables ask for) imported first. Test-only entry point;
django-q2 forks its workers from this process, so they inherit both."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import execute_from_command_line

    import tests.chaos.chaos_workflows  # noqa: F401  (registers workflows, installs fault hooks)

    execute_from_command_line(["manage.py", *sys.argv[1:]])


if __name__ == "__main__":
    main()
