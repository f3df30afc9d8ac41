"""`python -m tests.agents.chaos_worker durable worker`: `manage.py durable worker` with the agent crash
test's agent and fault hooks (tests/agents/chaos_agent.py) loaded first. Test-only entry point;
django-q2 forks its workers from this process, so they inherit both."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from tests.agents import chaos_agent

    chaos_agent.install_hooks()
    from django.core.management import execute_from_command_line

    execute_from_command_line(["manage.py", *sys.argv[1:]])


if __name__ == "__main__":
    main()
