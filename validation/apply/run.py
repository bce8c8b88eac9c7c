#!/usr/bin/env python3
"""Validate ``t2s-opt apply`` on real public trainers: do the default fixes place, and do the
patched trainers still train?

For every ``[[trainer]]`` of ``recipes.toml``:

1. copy the materialised repository (``validation/check/.work/<owner>__<repo>/``, written by
   ``validation/check/materialise.py``; the labelled commit is checked) to
   ``.work/<name>/base`` (git-ignored);
2. ``t2s-opt check --no-config --output-format json <entry>`` (cwd = base): the findings, the
   fixable ones split into default (safe) and opt-in (unsafe / on request);
3. ``t2s-opt apply --no-config --out .work/<name>/staging <entry>`` (cwd = base): what was fixed,
   what was held back and why; ``.work/<name>/patched`` = base + the files apply wrote
   (``--out FILE`` copies only the files the trainer reads, so the rest of the repository is
   filled in from base); ``patch.diff`` = the change;
4. ``t2s-opt smoke-test patched --cmd ... --compare base --max-steps N --timeout T --json``:
   a short CPU run of both copies through the recipe's wrapper;
5. the outcome: ``ok``, ``no-change`` (nothing applied), ``crash`` (patched exit fails while the
   baseline's passes), ``unbound-name`` (that crash is a NameError/UnboundLocalError/
   AttributeError on a name the patch introduced), ``lost-factor`` (the patched loss differs from
   the baseline's first-step loss, or its lr is off by a factor), ``destroyed-ema``
   (``ema_checkpoint`` fails on the patched side while it passed or was n/a on the baseline and
   an EMA fix was applied), ``smoke-regression`` (another check passes on the baseline and fails
   on the patched side), ``baseline-broken`` (the unpatched trainer does not run here:
   nothing to judge), ``apply-refused`` (apply wrote nothing and exited 2), ``tool-error``.

Writes ``results.json`` and prints a table and the totals.

Usage: python validation/apply/run.py [--only NAME ...] [--jobs 1] [--json OUT] [--skip-smoke]
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tomllib

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
CHECK_WORK = PROJECT / "validation" / "check" / ".work"
WORK = HERE / ".work"
WRAPPERS = HERE / "wrappers"
TOOL = Path(sys.executable).with_name("t2s-opt")
SKIP = shutil.ignore_patterns(".git", "__pycache__", ".t2s-smoke*")


def fix_kinds() -> dict[str, str]:
    """code -> applicability (safe / unsafe / on-request) from the tool's own registry."""
    try:
        sys.path.append(str(PROJECT))
        from optimizer_tool.registry import optimizations

        out = {}
        for opt in optimizations():
            for fix in opt.fixes:
                for code in fix.codes:
                    out[code] = fix.applicability.name.lower().replace("_", "-")
        return out
    except Exception as exc:  # noqa: BLE001 - the runner still works, without the split
        print(f"warning: cannot read the fix registry: {exc}", file=sys.stderr)
        return {}


def load_recipes(only: list[str] | None) -> list[dict]:
    with (HERE / "recipes.toml").open("rb") as fh:
        data = tomllib.load(fh)
    recipes = data["trainer"]
    if only:
        wanted = [o.lower() for o in only]
        exact = [r for r in recipes if r["name"].lower() in wanted]
        recipes = exact or [r for r in recipes if any(o in r["name"].lower() for o in wanted)]
    return recipes


def slug(repo: str) -> str:
    return repo.replace("/", "__")


TOOL_ENV: dict[str, str] = {}  # PYTHONPATH of a --tool-ref snapshot


def tool_snapshot(ref: str) -> tuple[Path, str]:
    """``git archive REV optimizer_tool`` into .work/_tool/<sha>/: the tool at a commit, unaffected by
    edits others make to the working tree while the set runs."""
    sha = subprocess.run(
        ["git", "-C", str(PROJECT), "rev-parse", ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    dest = WORK / "_tool" / sha
    if not (dest / "optimizer_tool").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        arch = subprocess.run(
            ["git", "-C", str(PROJECT), "archive", sha, "optimizer_tool"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=arch, check=True)
    return dest, sha


def sh(cmd: list[str], cwd: Path, timeout: float, env: dict | None = None) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    env = {**(env or os.environ), **TOOL_ENV}
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
        return p.returncode, p.stdout, p.stderr, time.monotonic() - t0
    except subprocess.TimeoutExpired as exc:
        return 124, exc.stdout or "", (exc.stderr or "") + f"\n[run.py] timed out after {timeout} s", timeout


# ---------------------------------------------------------------- apply output
FIXED = re.compile(r"^\s+fixed (\S+) .* in (\S+):(\d+)$")
NOT_PLACED = re.compile(r"^not applied: the (\S+) fix cannot place its change: (\S+?):(\d+): (.*)$")
NOT_APPLIED = re.compile(r"^not applied: the (\S+) fix (.*):$")
WROTE = re.compile(r"^wrote \d+ file\(s\):$")


def reason_kind(message: str) -> str:
    """A short, stable label of a refusal message (identifiers and paths dropped)."""
    m = re.sub(r"`[^`]*`", "X", message)
    m = re.sub(r"\([^)]*\)", "", m)
    m = m.split(";")[0].split(":")[0]
    return re.sub(r"\s+", " ", m).strip()[:90]


def parse_apply(stdout: str, stderr: str) -> dict:
    fixed, held, written, remaining, aborted = [], [], [], [], []
    lines = (stdout + "\n" + stderr).splitlines()
    in_wrote = in_remaining = in_abort = False
    for line in lines:
        if m := FIXED.match(line):
            fixed.append({"code": m[1], "file": m[2], "line": int(m[3])})
        elif m := NOT_PLACED.match(line):
            held.append({"key": m[1], "file": m[2], "line": int(m[3]), "reason": m[4], "kind": reason_kind(m[4])})
        elif m := NOT_APPLIED.match(line):
            held.append({"key": m[1], "file": None, "line": None, "reason": m[2], "kind": reason_kind(m[2])})
        if WROTE.match(line):
            in_wrote = True
            continue
        if line.startswith("still reported for the applied optimizations"):
            in_remaining = True
            continue
        if line.startswith("aborting:"):
            in_abort = True
            aborted.append(line)
            continue
        if line.startswith("  ") and in_wrote:
            written.append(line.strip())
        elif line.startswith("  ") and in_remaining:
            remaining.append(line.strip())
        elif line.startswith("  ") and in_abort:
            aborted.append(line.strip())
        elif not line.startswith("  "):
            in_wrote = in_remaining = in_abort = False
    errors = [line.split("error: ", 1)[1] for line in lines if line.startswith("t2s-opt: error: ")]
    return {
        "fixed": fixed,
        "held_back": held,
        "written": written,
        "remaining": remaining,
        "aborted": aborted,
        "errors": errors,
    }


# ---------------------------------------------------------------- smoke classification
def checks_of(side: dict | None) -> dict[str, str]:
    if not side:
        return {}
    return {c["key"]: c.get("status", "?") for c in side.get("checks", [])}


def details_of(side: dict | None) -> dict[str, str]:
    if not side:
        return {}
    checks = side.get("checks", [])
    return {c["key"]: " ".join(str(c.get(k) or "") for k in ("value", "detail")).strip() for c in checks}


def train_series(side: dict | None) -> list[dict]:
    series = (side or {}).get("series") or {}
    return series.get("train") or next(iter(series.values()), []) if isinstance(series, dict) else []


def exceptions_of(side: dict | None) -> list[str]:
    for c in (side or {}).get("checks", []):
        if c["key"] == "exit":
            return [str(e) for e in (c.get("data") or {}).get("exceptions", [])]
    return []


def run_log_tail(side: dict | None, smoke_out: Path, label: str) -> str:
    """The end of the failing run's log (where the traceback is)."""
    texts = list(exceptions_of(side))
    for run in (side or {}).get("runs", []):
        for key in ("stderr", "stdout"):
            val = run.get(key)
            if isinstance(val, str) and val and Path(val).is_file():
                texts.append(Path(val).read_text(errors="replace"))
            elif isinstance(val, str) and "\n" in val:
                texts.append(val)
    if not texts:
        for p in sorted((smoke_out / label).rglob("*.log")) if (smoke_out / label).is_dir() else []:
            texts.append(p.read_text(errors="replace"))
    return "\n".join(texts)[-4000:]


def classify(rec: dict, smoke: dict | None, smoke_out: Path) -> tuple[str, str]:
    applied = rec["apply"]["fixed"]
    if rec["apply"]["rc"] == 2 and not rec["apply"]["written"]:
        errors = [line for line in rec["apply"].get("errors", [])]
        return "apply-refused", "; ".join(errors + [h["kind"] for h in rec["apply"]["held_back"]]) or "exit 2"
    if smoke is None:
        return ("no-change" if not applied else "not-run"), rec.get("smoke_error", "")
    base, patched = smoke.get("baseline"), smoke
    cb, cp = checks_of(base), checks_of(patched)
    if cb.get("exit") != "pass":
        return "baseline-broken", details_of(base).get("exit", "")
    if not applied:
        return "no-change", "nothing applied by default (the two sides run the same code)"
    if cp.get("exit") != "pass":
        tail = run_log_tail(patched, smoke_out, "patched")
        err = ""
        for line in reversed(tail.splitlines()):
            if re.match(r"^\w*(Error|Exception)\b", line.strip()):
                err = line.strip()
                break
        if re.match(r"^(NameError|UnboundLocalError)\b", err) or (
            err.startswith("AttributeError") and "has no attribute" in err
        ):
            return "unbound-name", err
        return "crash", err or details_of(patched).get("exit", "")
    ema_fix = any(f["code"].startswith("EMA") for f in applied)
    if ema_fix and cp.get("ema_checkpoint") == "fail" and cb.get("ema_checkpoint") in ("pass", "n/a"):
        return "destroyed-ema", details_of(patched).get("ema_checkpoint", "")
    lost = lost_factor(base, patched)
    if lost:
        return "lost-factor", lost
    regress = [k for k, v in cb.items() if v == "pass" and cp.get(k) == "fail"]
    if regress:
        return "smoke-regression", "; ".join(f"{k}: {details_of(patched).get(k, '')}" for k in regress)
    return "ok", ""


def lost_factor(base: dict | None, patched: dict | None) -> str:
    """Same seed, same data, same model: the first optimizer step's loss must match (the safe fixes
    add EMA / schedules / clipping / logging, none of which changes the first forward pass); a
    constant ratio between the two losses is a scale the patch lost or added."""

    def first_loss(side):
        steps = train_series(side)
        v = steps[0].get("loss") if steps else None
        return v if isinstance(v, (int, float)) else None

    lb, lp = first_loss(base), first_loss(patched)
    if lb is None or lp is None or lb == 0:
        return ""
    ratio = lp / lb
    if abs(ratio - 1) > 0.05 and abs(ratio - round(ratio)) < 0.02 and round(ratio) >= 2:
        return f"first-step loss {lp:.4g} vs baseline {lb:.4g} (x{ratio:.3g})"
    return ""


# ---------------------------------------------------------------- one trainer
def run_one(recipe: dict, kinds: dict[str, str], skip_smoke: bool) -> dict:
    name = recipe["name"]
    t0 = time.monotonic()
    work = WORK / name
    rec: dict = {
        "name": name,
        "repo": recipe["repo"],
        "commit": recipe["commit"],
        "style": recipe.get("style", ""),
        "entry": recipe["entry"],
        "expect": recipe.get("expect", []),
    }
    src = CHECK_WORK / slug(recipe["repo"])
    stamp = src / ".t2s-validation-commit"
    if not src.is_dir():
        rec.update(outcome="not-materialised", detail=f"run validation/check/materialise.py --only {recipe['repo']}")
        return rec
    if stamp.exists() and stamp.read_text().strip() != recipe["commit"]:
        held = stamp.read_text().strip()
        rec.update(outcome="not-materialised", detail=f"{src} holds {held}, not {recipe['commit']}")
        return rec
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    base, staging, patched = work / "base", work / "staging", work / "patched"
    shutil.copytree(src, base, ignore=SKIP, symlinks=True)
    for extra in recipe.get("setup", []):  # files the recipe adds to both sides (none is code of theirs)
        pass

    # check
    rc, out, err, dt = sh([str(TOOL), "check", "--no-config", "--output-format", "json", recipe["entry"]], base, 300)
    (work / "check.json").write_text(out)
    try:
        findings = json.loads(out)["findings"]
    except Exception:  # noqa: BLE001
        findings = []
        rec["check_error"] = (err or out)[-2000:]
    fixable = [f for f in findings if f.get("fixable")]
    rec["check"] = {
        "rc": rc,
        "seconds": round(dt, 1),
        "findings": len(findings),
        "codes": sorted(f["code"] for f in findings),
        "fixable": sorted(f["code"] for f in fixable),
        "fixable_default": sorted(f["code"] for f in fixable if kinds.get(f["code"]) == "safe"),
        "fixable_optin": sorted(f["code"] for f in fixable if kinds.get(f["code"], "safe") != "safe"),
    }

    # apply
    rc, out, err, dt = sh([str(TOOL), "apply", "--no-config", "--out", str(staging), recipe["entry"]], base, 300)
    (work / "apply.txt").write_text(
        f"$ t2s-opt apply --no-config --out {staging} {recipe['entry']}\nexit {rc}\n"
        f"--- stdout\n{out}\n--- stderr\n{err}"
    )
    parsed = parse_apply(out, err)
    rec["apply"] = {"rc": rc, "seconds": round(dt, 1), **parsed}
    root = Path(recipe["entry"]).parent
    if rc == 2 and any("outside" in e and "pass the folder" in e for e in parsed["errors"]):
        # the entry-file form refuses fixes in modules outside the entry's folder (scripts/ + the
        # package beside it): fall back to the documented way out, the repository folder; that
        # form may also patch other trainers of the repository (recorded as fallback)
        shutil.rmtree(staging, ignore_errors=True)
        rc2, out2, err2, dt2 = sh([str(TOOL), "apply", "--no-config", "--out", str(staging), "."], base, 300)
        with (work / "apply.txt").open("a") as fh:
            fh.write(
                f"\n$ t2s-opt apply --no-config --out {staging} .\nexit {rc2}\n--- stdout\n{out2}\n--- stderr\n{err2}"
            )
        parsed2 = parse_apply(out2, err2)
        rec["apply"]["entry_form"] = {"rc": rc, "errors": parsed["errors"]}
        rec["apply"].update(rc=rc2, seconds=round(dt + dt2, 1), fallback="folder", **parsed2)
        root = Path(".")
    shutil.copytree(base, patched, ignore=SKIP, symlinks=True)
    diff_text = []
    changed = []
    # `apply --out DIR path/to/entry.py` roots the copy at the entry's project: its folder, widened up
    # to the files its unit reads (abarankab's scripts/train_cifar.py reads ddpm/ at the repository
    # root): staging/<x> is base/<root>/<x> for the deepest root under which every staged file exists
    if staging.is_dir():
        staged = [p.relative_to(staging) for p in staging.rglob("*") if p.is_file()]
        if rec["apply"].get("fallback") != "folder":
            entry_dir = Path(recipe["entry"]).parent
            roots = [entry_dir, *entry_dir.parents]
            root = next((r for r in roots if all((base / r / f).is_file() for f in staged)), root)
        for f in sorted(p for p in staging.rglob("*") if p.is_file()):
            rel = root / f.relative_to(staging)
            old = (base / rel).read_text(errors="replace") if (base / rel).is_file() else ""
            new = f.read_text(errors="replace")
            if old != new:
                changed.append(str(rel))
                diff_text += difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{rel}", f"b/{rel}")
            (patched / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, patched / rel)
    (work / "patch.diff").write_text("".join(diff_text))
    rec["apply"]["changed_files"] = changed
    rec["apply"]["diff_lines"] = sum(1 for line in diff_text if line[:1] in "+-" and line[:3] not in ("+++", "---"))
    # fixable default findings neither fixed nor held back by key
    fixed_codes = [f["code"] for f in parsed["fixed"]]
    held_keys = {h["key"] for h in parsed["held_back"]}
    key_of = {f["code"]: f.get("optimization") for f in findings}
    rec["apply"]["unaccounted"] = sorted(
        c for c in rec["check"]["fixable_default"] if c not in fixed_codes and key_of.get(c) not in held_keys
    )

    # smoke
    smoke = None
    if not skip_smoke and recipe.get("cmd"):
        fmt = {"python": sys.executable, "wrappers": str(WRAPPERS), "project": str(PROJECT)}
        cmd = recipe["cmd"].replace("{python}", fmt["python"]).replace("{wrappers}", fmt["wrappers"])
        for pre in recipe.get("prepare", []):  # commands run in both copies first (data folders)
            pre = pre.replace("{python}", fmt["python"]).replace("{wrappers}", fmt["wrappers"])
            for side in (base, patched):
                prc, pout, perr, _ = sh(["bash", "-c", pre], side, 300)
                if prc:
                    rec["smoke_error"] = f"prepare failed: {pre}: {perr[-800:]}"
        smoke_out = work / "smoke"
        js = work / "smoke.json"
        args = [
            str(TOOL),
            "smoke-test",
            str(patched),
            "--cmd",
            cmd,
            "--compare",
            str(base),
            "--epochs",
            str(recipe.get("epochs", 2)),
            "--max-steps",
            str(recipe.get("max_steps", 20)),
            "--timeout",
            str(recipe.get("timeout", 240)),
            "--json",
            str(js),
            "--out",
            str(smoke_out),
        ]
        if recipe.get("resume_arg"):
            args += ["--resume-arg", recipe["resume_arg"]]
        args += recipe.get("smoke_args", [])
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "2",
            "MKL_NUM_THREADS": "2",
            "CUDA_VISIBLE_DEVICES": "",
            "WANDB_MODE": "disabled",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "MPLBACKEND": "Agg",
        }
        env.update(recipe.get("env", {}))
        rc, out, err, dt = sh(args, PROJECT, 2 * float(recipe.get("timeout", 240)) + 60, env)
        (work / "smoke.txt").write_text(out + "\n--- stderr\n" + err)
        rec["smoke"] = {"rc": rc, "seconds": round(dt, 1), "cmd": recipe["cmd"]}
        if js.is_file():
            smoke = json.loads(js.read_text())
            rec["smoke"]["baseline"] = checks_of(smoke.get("baseline"))
            rec["smoke"]["patched"] = checks_of(smoke)
            rec["smoke"]["baseline_detail"] = details_of(smoke.get("baseline"))
            rec["smoke"]["patched_detail"] = details_of(smoke)
            rec["smoke"]["steps"] = {
                "baseline": len(train_series(smoke.get("baseline"))),
                "patched": len(train_series(smoke)),
            }
            rec["smoke"]["first_loss"] = {
                "baseline": (train_series(smoke.get("baseline")) or [{}])[0].get("loss"),
                "patched": (train_series(smoke) or [{}])[0].get("loss"),
            }
            rec["smoke"]["exceptions"] = {
                "baseline": exceptions_of(smoke.get("baseline"))[-3:],
                "patched": exceptions_of(smoke)[-3:],
            }
            expect = set(recipe.get("expect", []))
            seen = {k for k, v in rec["smoke"]["baseline"].items() if v != "n/a"}
            rec["smoke"]["expected_but_na"] = sorted(expect - seen)
        else:
            rec["smoke_error"] = (err or out)[-2000:]
        outcome, detail = classify(rec, smoke, smoke_out)
        if outcome in ("crash", "unbound-name") and not detail:
            detail = (out + err)[-500:]
    else:
        outcome, detail = classify(rec, None, work / "smoke")
        if outcome == "not-run":
            detail = "no smoke recipe: " + recipe.get("why_not", "")
    rec["outcome"], rec["detail"] = outcome, detail
    rec["seconds"] = round(time.monotonic() - t0, 1)
    return rec


# ---------------------------------------------------------------- report
def totals(results: list[dict]) -> dict:
    fixable = sum(len(r.get("check", {}).get("fixable", [])) for r in results)
    fixable_default = sum(len(r.get("check", {}).get("fixable_default", [])) for r in results)
    applied = sum(_applied_of_found(r) for r in results)
    follow_on = sum(len(r.get("apply", {}).get("fixed", [])) for r in results) - applied
    refused = Counter()
    refused_key = Counter()
    for r in results:
        for h in r.get("apply", {}).get("held_back", []):
            refused[f"{h['key']}: {h['kind']}"] += 1
            refused_key[h["key"]] += 1
        for e in r.get("apply", {}).get("errors", []) + r.get("apply", {}).get("entry_form", {}).get("errors", []):
            refused["(whole apply, exit 2): " + re.sub(r"/\S+", "PATH", e).split(";")[0]] += 1
    outcomes = Counter(r.get("outcome") for r in results)
    breaks = {
        k: v
        for k, v in outcomes.items()
        if k in ("crash", "unbound-name", "lost-factor", "destroyed-ema", "smoke-regression")
    }
    return {
        "trainers": len(results),
        "smoke_judged": sum(
            1
            for r in results
            if r.get("outcome") in ("ok", "crash", "unbound-name", "lost-factor", "destroyed-ema", "smoke-regression")
        ),
        "fixable_findings": fixable,
        "fixable_default": fixable_default,
        "fixable_optin": fixable - fixable_default,
        "applied_by_default": applied,
        "follow_on_fixed": follow_on,
        "applied_pct_of_fixable": round(100 * applied / fixable, 1) if fixable else None,
        "applied_pct_of_default_fixable": round(100 * applied / fixable_default, 1) if fixable_default else None,
        "refused": sum(refused.values()),
        "refused_by_key": dict(sorted(refused_key.items())),
        "refused_by_reason": dict(refused.most_common()),
        "outcomes": dict(outcomes.most_common()),
        "breaks": breaks,
    }


def _applied_of_found(r: dict) -> int:
    """Fixed findings that `check` reported before apply; a finding that one fix creates and another
    resolves in the same run (MON002 once LR001 adds a schedule) is a follow-on, not counted here."""
    found = Counter(r.get("check", {}).get("fixable", []))
    fixed = Counter(f["code"] for f in r.get("apply", {}).get("fixed", []))
    return sum((fixed & found).values())


def table(results: list[dict], tot: dict) -> str:
    rows = [("trainer", "fixable", "default", "applied", "refused", "base smoke", "patched smoke", "outcome", "s")]
    short = {"pass": "P", "fail": "F", "n/a": "-", "warn": "W"}
    order = ["exit", "finite", "loss_falls", "lr_schedule", "grad_clipping", "ema_checkpoint", "sample"]
    for r in results:
        s = r.get("smoke", {})

        def fmt(side):
            c = s.get(side) or {}
            return "".join(short.get(c.get(k, ""), "?") for k in order) if c else ""

        rows.append(
            (
                r["name"],
                str(len(r.get("check", {}).get("fixable", []))),
                str(len(r.get("check", {}).get("fixable_default", []))),
                (
                    ",".join(
                        f["code"] + ("" if f["code"] in r.get("check", {}).get("fixable", []) else "+")
                        for f in r.get("apply", {}).get("fixed", [])
                    )
                    or "-"
                )
                + (" [apply .]" if r.get("apply", {}).get("fallback") else ""),
                ",".join(h["key"] for h in r.get("apply", {}).get("held_back", [])) or "-",
                fmt("baseline"),
                fmt("patched"),
                r.get("outcome", "?"),
                str(r.get("seconds", "")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("smoke columns: " + " ".join(order) + " (P pass, F fail, W warn, - n/a)")
    lines.append(
        f"fixable findings: {tot['fixable_findings']} ({tot['fixable_default']} with a default/safe fix, "
        f"{tot['fixable_optin']} opt-in: unsafe or on request)"
    )
    lines.append(
        f"applied by default: {tot['applied_by_default']} = {tot['applied_pct_of_fixable']}% of fixable, "
        f"{tot['applied_pct_of_default_fixable']}% of the default-fixable "
        f"(+{tot.get('follow_on_fixed', 0)} follow-on findings created and fixed in the same run, marked +)"
    )
    lines.append(f"refused (held back): {tot['refused']}  by key {tot['refused_by_key']}")
    for k, v in tot["refused_by_reason"].items():
        lines.append(f"  {v:3d}  {k}")
    lines.append(f"outcomes: {tot['outcomes']}")
    lines.append(
        f"patches that break, by kind: {tot['breaks'] or 'none'} (of {tot['smoke_judged']} judged by smoke-test)"
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", help="trainer name (recipes.toml), repeatable")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", type=Path, default=HERE / "results.json")
    ap.add_argument("--skip-smoke", action="store_true", help="check and apply only")
    ap.add_argument(
        "--tool-ref",
        help="run optimizer_tool as of this git revision (a snapshot on PYTHONPATH) instead of the working tree",
    )
    args = ap.parse_args()
    tool_info = {
        "head": subprocess.run(
            ["git", "-C", str(PROJECT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "dirty": subprocess.run(
            ["git", "-C", str(PROJECT), "status", "--short", "optimizer_tool"], capture_output=True, text=True
        ).stdout.splitlines(),
    }
    if args.tool_ref:
        dest, sha = tool_snapshot(args.tool_ref)
        TOOL_ENV["PYTHONPATH"] = str(dest)
        sys.path.insert(0, str(dest))
        tool_info = {"ref": args.tool_ref, "commit": sha, "snapshot": str(dest), "dirty": []}
    recipes = load_recipes(args.only)
    if not recipes:
        print("no recipe matches", file=sys.stderr)
        return 2
    kinds = fix_kinds()
    t0 = time.monotonic()

    def one(r):
        print(f"[run] {r['name']} ...", file=sys.stderr, flush=True)
        try:
            res = run_one(r, kinds, args.skip_smoke)
        except Exception as exc:  # noqa: BLE001 - one broken recipe must not stop the set
            res = {"name": r["name"], "repo": r["repo"], "outcome": "tool-error", "detail": repr(exc)}
        print(
            f"[run] {r['name']}: {res.get('outcome')} {res.get('detail', '')[:160]} ({res.get('seconds')} s)",
            file=sys.stderr,
            flush=True,
        )
        return res

    if args.jobs > 1:
        with ThreadPoolExecutor(args.jobs) as ex:
            results = list(ex.map(one, recipes))
    else:
        results = [one(r) for r in recipes]
    tot = totals(results)
    tot["wall_seconds"] = round(time.monotonic() - t0, 1)
    data = {
        "command": "python validation/apply/run.py " + " ".join(sys.argv[1:]),
        "tool": str(TOOL),
        "tool_source": tool_info,
        "totals": tot,
        "trainers": results,
    }
    if args.only and args.json == HERE / "results.json" and (HERE / "results.json").exists():
        # a partial run updates its trainers in results.json, keeping the others
        old = json.loads((HERE / "results.json").read_text())
        by_name = {r["name"]: r for r in old.get("trainers", [])}
        by_name.update({r["name"]: r for r in results})
        order = [r["name"] for r in load_recipes(None)]
        merged = [by_name[n] for n in order if n in by_name]
        data = {
            "command": old.get("command", data["command"]),
            "tool": str(TOOL),
            "tool_source": tool_info,
            "totals": totals(merged),
            "trainers": merged,
            "last_partial": data["command"],
        }
        data["totals"]["wall_seconds"] = old.get("totals", {}).get("wall_seconds")
        results, tot = merged, data["totals"]
    args.json.write_text(json.dumps(data, indent=1) + "\n")
    print(table(results, tot))
    print(f"wall time: {time.monotonic() - t0:.0f} s; results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
