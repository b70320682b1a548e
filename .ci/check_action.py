"""Checks a composite action's metadata (action.yml) the way actionlint does not: actionlint
reads action metadata only through a workflow that uses the action. Exits 1 naming each
problem."""

import re
import sys

import yaml

EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def problems(path):
    with open(path, encoding="utf-8") as f:
        action = yaml.safe_load(f)
    if not isinstance(action, dict):
        yield "not a mapping"
        return
    for key in ("name", "description", "runs"):
        if key not in action:
            yield f"no `{key}`"
    inputs = action.get("inputs") or {}
    for name, spec in inputs.items():
        if not isinstance(spec, dict) or "description" not in spec:
            yield f"input `{name}` has no description"
    runs = action.get("runs") or {}
    if runs.get("using") != "composite":
        yield f"runs.using is {runs.get('using')!r}, not 'composite'"
    steps = runs.get("steps") or []
    if not steps:
        yield "runs.steps is empty"
    ids = {s.get("id") for s in steps if isinstance(s, dict)}
    for i, step in enumerate(steps):
        where = f"step {i + 1} ({step.get('name', step.get('uses', '?'))})"
        if ("run" in step) == ("uses" in step):
            yield f"{where}: needs exactly one of `run` and `uses`"
        if "run" in step:
            if "shell" not in step:
                yield f"{where}: a composite action's `run` step needs `shell`"
            # Inputs reach scripts through env only: an expression in a script is injection.
            if EXPR.search(step["run"]):
                yield f"{where}: an expression inside `run`; pass it through `env`"
    for expr in EXPR.findall(yaml.safe_dump(action)):
        for name in re.findall(r"\binputs\.([A-Za-z0-9_-]+)", expr):
            if name not in inputs:
                yield f"`inputs.{name}` is not declared"
        for name in re.findall(r"\bsteps\.([A-Za-z0-9_-]+)", expr):
            if name not in ids:
                yield f"`steps.{name}` names no step id"
    for name, spec in (action.get("outputs") or {}).items():
        if "value" not in spec:
            yield f"output `{name}` has no value (composite outputs need one)"


def main():
    failed = False
    for path in sys.argv[1:]:
        for problem in problems(path):
            print(f"{path}: {problem}")
            failed = True
    sys.exit(1 if failed else 0)


main()
