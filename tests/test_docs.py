"""The documentation stays true: the getting-started guide works as written, and the
reference pages name every setting, command option and public API name."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from django.conf import settings
from django.core.management import BaseCommand, get_commands, load_command_class

import django_eventsource
from django_eventsource.conf import DEFAULTS

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```(?P<lang>\w*)(?P<attrs>[^\n]*)\n(?P<body>.*?)^```\s*$", re.M | re.S)
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
APPEND_SUFFIX = " (add at the end)"
# Commands of the guide that need a person at the keyboard (or the network).
INTERACTIVE = (
    "pip install",
    "python -m venv",
    "/bin/activate",
    "manage.py createsuperuser",
    "manage.py runserver",
)


@dataclass
class Command:
    line: str
    expected_output: list[str] = field(default_factory=list)


@dataclass
class FileStep:
    path: str
    content: str
    append: bool


def guide_steps(text: str) -> list[Command | FileStep]:
    """The files and commands of a guide, in the order a reader meets them."""
    steps: list[Command | FileStep] = []
    for block in FENCE.finditer(text):
        body = block["body"]
        if block["lang"] == "console":
            for line in body.splitlines():
                if line.startswith("$ "):
                    steps.append(Command(line[2:]))
                elif line.strip() and steps and isinstance(steps[-1], Command):
                    steps[-1].expected_output.append(line)
        elif title := TITLE.search(block["attrs"]):
            path = title["title"]
            append = path.endswith(APPEND_SUFFIX)
            steps.append(FileStep(path.removesuffix(APPEND_SUFFIX), body, append))
    return steps


def run_guide_command(line: str, cwd: Path, env: dict[str, str]) -> str:
    args = shlex.split(line)
    if args[0] == "django-admin":
        args = [sys.executable, "-m", "django", *args[1:]]
    elif args[0] == "python":
        args = [sys.executable, *args[1:]]
    completed = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, (
        f"`{line}` failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}"
    )
    return completed.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    settings.DB_BACKEND == "postgres",
    reason="the guide's project uses its own SQLite database; the SQLite run covers it",
)
def test_getting_started_guide_works_in_a_new_project(tmp_path: Path) -> None:
    steps = guide_steps((DOCS / "getting-started.md").read_text())
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # The package of this checkout, whatever copy the environment has installed.
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(DOCS.parent)])
    ran: list[str] = []
    for step in steps:
        if isinstance(step, FileStep):
            target = tmp_path / step.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if step.append:
                with target.open("a") as settings_file:
                    settings_file.write("\n" + step.content)
            else:
                target.write_text(step.content)
            continue
        if any(step.line.startswith(p) or p in step.line for p in INTERACTIVE):
            continue
        output = run_guide_command(step.line, tmp_path, env)
        ran.append(step.line)
        for expected in step.expected_output:
            assert expected in output, f"`{step.line}` printed {output!r}, not {expected!r}"

    assert "python manage.py run_projections --once" in ran
    # The projection's effect, checked independently of the guide's own check.
    check = run_guide_command(
        'python manage.py shell -c "from todo.models import TaskListItem; '
        "print(TaskListItem.objects.filter(title='Write the docs', done=True).count())\"",
        tmp_path,
        env,
    )
    assert check.split()[-1] == "1"
    # Nor does the guide leave its reader with a system check warning.
    run_guide_command("python manage.py check --fail-level WARNING", tmp_path, env)


def test_settings_page_documents_every_setting_with_its_default() -> None:
    page = (DOCS / "settings.md").read_text()
    for name, default in DEFAULTS.items():
        assert f"EVENTSOURCE_{name}" in page, f"EVENTSOURCE_{name} is not documented"
        assert f"### `EVENTSOURCE_{name}`" in page, f"EVENTSOURCE_{name} has no section"
        section = re.split(r"\n#{2,3} ", page.split(f"### `EVENTSOURCE_{name}`", 1)[1])[0]
        assert f"Default: `{default!r}`" in section, f"default of EVENTSOURCE_{name} missing"


LIBRARY_COMMANDS = sorted(
    name for name, app in get_commands().items() if app == "django_eventsource"
)


def test_library_ships_the_documented_commands() -> None:
    assert set(LIBRARY_COMMANDS) >= {
        "run_projections",
        "publish_outbox",
        "consume_events",
        "reset_projection",
        "retry_dead_letters",
        "eventsource_status",
    }


@pytest.mark.parametrize("name", LIBRARY_COMMANDS)
def test_commands_page_documents_every_option_of(name: str) -> None:
    page = (DOCS / "commands.md").read_text()
    assert f"## `{name}`" in page
    section = page.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
    parser = load_command_class("django_eventsource", name).create_parser("manage.py", name)
    # Options every Django command has (--verbosity, --settings, ...) are documented once.
    base_options = set(BaseCommand().create_parser("manage.py", name)._option_string_actions)
    for action in parser._actions:
        if not action.option_strings:
            if action.dest != "args":
                assert action.dest.upper() in section or action.dest in section, action.dest
            continue
        if set(action.option_strings) & base_options:
            continue
        longest = max(action.option_strings, key=len)
        assert f"`{longest}" in section, f"{name} {longest} is not documented"


def test_api_reference_covers_every_public_name() -> None:
    page = (DOCS / "api.md").read_text()
    directives = {
        line.split()[1].rsplit(".", 1)[-1] for line in page.splitlines() if line.startswith("::: ")
    }
    missing = sorted(set(django_eventsource.__all__) - directives - {"__version__"})
    assert not missing, f"api.md has no ::: directive for {missing}"


def test_api_reference_directives_point_at_the_defining_modules() -> None:
    page = (DOCS / "api.md").read_text()
    for line in page.splitlines():
        if line.startswith("::: django_eventsource."):
            dotted = line.split()[1]
            module, _, name = dotted.rpartition(".")
            value = getattr(importlib.import_module(module), name, None)
            if value is None:  # a whole module
                importlib.import_module(dotted)
                continue
            defined_in = getattr(value, "__module__", None) or ""
            # Aliases of typing constructs report typing's module; constants have none.
            if defined_in.startswith("django_eventsource.") and not isinstance(value, str | int):
                assert defined_in == module, line


def test_readme_opens_with_the_name_one_sentence_and_the_two_commands() -> None:
    readme = (DOCS.parent / "README.md").read_text()
    first_block = FENCE.search(readme)
    assert first_block is not None
    before = readme[: first_block.start()].strip().split("\n\n")
    assert before[0] == "# django-eventsource"
    assert len(before) == 2 and before[1].count(". ") == 0 and before[1].endswith(".")
    assert first_block["body"].splitlines() == ["python3 dev.py demo", "python3 dev.py test"]


def test_every_docs_page_is_in_the_navigation() -> None:
    nav = (DOCS.parent / "mkdocs.yml").read_text()
    pages = sorted(path.name for path in DOCS.glob("*.md"))
    assert [page for page in pages if f": {page}" not in nav] == []


#: The public names of the eventsource guide, from its "Public API Surface" and module
#: tables; the PostgreSQL classes are the ones renamed here.
GUIDE_NAMES = (
    *("TState", "AggregateId", "EventId", "TenantId", "CorrelationId", "CausationId"),
    *("DomainEvent", "EventRegistry", "default_registry", "register_event"),
    *("get_event_class", "get_event_class_or_none", "is_event_registered"),
    *("list_registered_events", "EventTypeNotFoundError", "DuplicateEventTypeError"),
    *("EventStore", "EventPublisher", "EventStream", "AppendResult", "StoredEvent"),
    *("ReadOptions", "ReadDirection", "ExpectedVersion", "InMemoryEventStore"),
    *("PostgreSQLEventStore", "AggregateRoot", "DeclarativeAggregate", "AggregateRepository"),
    *("Projection", "EventHandlerBase", "CheckpointTrackingProjection"),
    *("DeclarativeProjection", "handles", "EventSubscriber", "ProjectionRegistry"),
    *("ProjectionCoordinator", "EventBus", "EventHandler", "EventHandlerFunc"),
    *("AsyncEventHandler", "InMemoryEventBus", "RedisEventBus", "RedisEventBusConfig"),
    *("RedisEventBusStats", "RedisNotAvailableError", "REDIS_AVAILABLE"),
    *("CheckpointRepository", "PostgreSQLCheckpointRepository"),
    *("InMemoryCheckpointRepository", "CheckpointData", "LagMetrics", "DLQRepository"),
    *("PostgreSQLDLQRepository", "InMemoryDLQRepository", "DLQEntry", "DLQStats"),
    *("ProjectionFailureCount", "OutboxRepository", "PostgreSQLOutboxRepository"),
    *("InMemoryOutboxRepository", "OutboxEntry", "OutboxStats", "EventSourceJSONEncoder"),
)
DOTTED_NAME = re.compile(r"\bdjango_eventsource(?:\.\w+)+")


def resolve_dotted(dotted: str) -> object:
    """The module or attribute a dotted path names; raises when it names nothing."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            value = getattr(value, attribute)
        return value
    raise ModuleNotFoundError(dotted)


def test_guide_migration_page_maps_every_public_name_of_the_guide() -> None:
    page = (DOCS / "guide-migration.md").read_text()
    assert [name for name in GUIDE_NAMES if f"`{name}" not in page] == []


def test_every_module_path_on_the_guide_migration_page_imports() -> None:
    page = (DOCS / "guide-migration.md").read_text()
    spans = re.findall(r"`([^`\n]+)`", page)
    named = sorted({m for span in spans for m in DOTTED_NAME.findall(span)})
    assert len(named) > 30  # the page names real paths, not just prose
    broken = []
    for dotted in named:
        try:
            resolve_dotted(dotted)
        except (ImportError, AttributeError) as exc:
            broken.append(f"{dotted}: {exc}")
    assert broken == []


def test_guide_migration_page_points_each_guide_name_at_a_module_holding_it() -> None:
    page = (DOCS / "guide-migration.md").read_text()
    table = page.split("\n## Names\n", 1)[1].split("\n## ", 1)[0]
    misplaced = []
    for row in table.splitlines():
        cells = row.split("|")
        if len(cells) < 4 or not (target := DOTTED_NAME.search(cells[2])):
            continue
        where = resolve_dotted(target.group(0))
        for name in re.findall(r"`(\w+)", cells[1]):
            if name.startswith("PostgreSQL"):  # renamed: the cell names the Django class
                continue
            if isinstance(where, ModuleType):
                found = hasattr(where, name)
            else:
                found = getattr(where, "__name__", None) == name
            if not found:
                misplaced.append(f"{name} is not in {target.group(0)}")
    assert misplaced == []
