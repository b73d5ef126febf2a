"""Run the mutants that ``mutmut`` generated, with a fork per mutant and only the tests of the mutated file.

Why not ``mutmut run`` itself: mutmut 3.8's stats phase records no trampoline hits in this project (it
matches call frames against ``source_paths`` given as files, and with directories it would mutate far more
than the two cores can test in the time box), so it stops before testing anything. mutmut's *generation*
works; this script reuses it: it reads the ``mutants/`` tree (``mutmut run`` writes it before stopping),
skips mutants that only change a string literal (error-message text), and runs each remaining mutant in a
forked child (torch and pytest imported once, in the parent) with ``MUTANT_UNDER_TEST`` set, exactly the
switch mutmut's trampolines read. Exit status != 0 or a timeout = killed.

Usage (from a copy of the repo whose pyproject has a ``[tool.mutmut]`` section; see docs/testing.md):
    PYTHONPATH=$PWD/mutants python tests/mutation_run.py --out results.jsonl \
        loraven/adapters/lora_ar/spectral.py=tests/unit/test_lora_ar_spectral.py ...
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import sys
import textwrap
import time
import tokenize
import zlib
from pathlib import Path

DEF = re.compile(r"^\s*def ((?:x_|xǁ)\S+?__mutmut_(?:\d+|orig))\(", re.M)


def _functions(text: str) -> dict[str, str]:
    """Mutant/orig function name -> its source (up to the next mutmut def or module-level line)."""
    out: dict[str, str] = {}
    matches = list(DEF.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out[m.group(1)] = text[m.start() : end]
    return out


def _tokens(src: str) -> list[tuple[int, str]]:
    toks = []
    try:
        for t in tokenize.generate_tokens(io.StringIO(textwrap.dedent(src).strip() + "\n").readline):
            if t.type in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
                continue
            toks.append((t.type, "<str>" if t.type == tokenize.STRING else t.string))
    except (tokenize.TokenError, IndentationError):
        return [(-1, src)]  # unparsable chunk: never counts as string-only
    return toks


def mutants_of(path: Path) -> tuple[list[str], list[str]]:
    """(mutant names to run, mutant names that only change a string literal)."""
    funcs = _functions(path.read_text())
    run, strings = [], []
    for name, src in funcs.items():
        if name.endswith("__mutmut_orig"):
            continue
        base = name.rsplit("__mutmut_", 1)[0]
        orig = funcs.get(base + "__mutmut_orig", "")
        mutant_src = src.replace(name, "F")
        orig_src = orig.replace(base + "__mutmut_orig", "F")
        same = _tokens(mutant_src) == _tokens(orig_src)
        (strings if same else run).append(name)
    return run, strings


def run_one(module: str, name: str, tests: list[str], timeout: float) -> str:
    import pytest

    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.environ["MUTANT_UNDER_TEST"] = f"{module}.{name}" if name else ""
        rc = pytest.main([*tests, "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"])
        os._exit(int(rc))
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "survived" if os.waitstatus_to_exitcode(status) == 0 else "killed"
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs", nargs="+", help="source.py=test_a.py,test_b.py")
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--every", type=int, default=1, help="test the mutants with crc32(name) %% EVERY == 0")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch  # noqa: F401  (imported once, before forking)

    torch.set_num_threads(1)
    os.chdir("mutants")
    sys.path.insert(0, os.getcwd())
    plan: list[tuple[str, str, list[str]]] = []
    with open(Path("..") / args.out, "w") as fh:
        for pair in args.pairs:
            src, tests = pair.split("=")
            tests = tests.split(",")
            module = src.removesuffix(".py").replace("/", ".")
            if run_one(module, "", tests, args.timeout) != "survived":
                sys.exit(f"clean run of {tests} fails: fix the tests first")
            run, strings = mutants_of(Path(src))
            for name in strings:
                fh.write(json.dumps({"file": src, "mutant": name, "status": "string-only"}) + "\n")
            plan += [(module, name, tests) for name in run]
        # a stable subset: a mutant's name depends only on its function and position, so an unchanged file
        # gives the same subset before and after a change of the tests
        plan = [p for p in plan if zlib.crc32(p[1].encode()) % args.every == 0]
        for module, name, tests in plan:
            status = run_one(module, name, tests, args.timeout)
            fh.write(json.dumps({"file": module, "mutant": name, "status": status}) + "\n")
            fh.flush()


if __name__ == "__main__":
    main()
