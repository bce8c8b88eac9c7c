#!/usr/bin/env python3
"""Score ``t2s-opt check`` against the labelled validation set.

For every ``[[files]]`` entry of every ``labels/*.toml`` this runs

    t2s-opt check --no-config --output-format json -j 1 <path>

with cwd = the materialised repository (``.work/<owner>__<repo>/``, see
``materialise.py``), derives the tool's verdict per optimization key and compares
it with the label.

Two JSON shapes are understood:

* legacy: a list of findings ``{"code","optimization","severity","message",
  "filename","location":{"row","column"},"fixable"}``; a key with a finding of
  severity ``missing`` is ``missing``, any other key is ``present`` ("silent =
  pass");
* schema 2: ``{"schema_version": 2, "units": [{"entry", "diffusion",
  "verdicts": {key: {"state", "reason", "location"}}}], "findings": [...]}``;
  the unit whose ``entry`` is the labelled file (or the only unit) gives the
  verdicts.

Usage: python validation/check/score.py [--only REPO] [--jobs N] [--json OUT] [--tool PATH]
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from materialise import load_labels as label_files  # the same labels and --only matching as materialise.py

HERE = Path(__file__).resolve().parent
LABELS = HERE / "labels"
WORK = HERE / ".work"
PROJECT = HERE.parent.parent

KEYS = ["ema", "cosine", "offset", "zero-snr", "vpred", "lr-schedule", "lpips", "clipping", "resolution", "monitoring"]
DIFFUSION_KEYS = {"cosine", "offset", "zero-snr", "vpred", "lpips", "resolution"}
STATES = {"present", "missing", "off-by-default", "decided-elsewhere", "n/a", "unknown"}
LABEL_STATES = STATES - {"unknown"}
TIMEOUT_S = 120


# ---------------------------------------------------------------- labels
def load_labels(only: list[str] | None) -> list[dict]:
    """One case per labelled file of the selected repositories (materialise.py reads the same labels)."""
    cases = []
    for lab in label_files(only):
        p = lab["_label_file"]
        for f in lab.get("files", []):
            verdicts = f.get("verdicts", {})
            bad = {k: v for k, v in verdicts.items() if k not in KEYS or v not in LABEL_STATES}
            if bad or set(verdicts) != set(KEYS):
                raise SystemExit(f"{p.name}: {f['path']}: bad verdicts {bad or sorted(set(KEYS) - set(verdicts))}")
            cases.append(
                {
                    "repo": lab["repo"],
                    "commit": lab["commit"],
                    "style": lab.get("style", ""),
                    "path": f["path"],
                    "diffusion": bool(f.get("diffusion", True)),
                    "verdicts": verdicts,
                    "bugs": f.get("bugs", []),
                    "label_file": p.name,
                }
            )
    return cases


# ---------------------------------------------------------------- running the tool
def default_tool() -> str:
    for cand in (Path(sys.executable).parent / "t2s-opt", PROJECT / ".venv" / "bin" / "t2s-opt"):
        if cand.exists():
            return str(cand)
    return shutil.which("t2s-opt") or "t2s-opt"


def run_case(case: dict, tool: str) -> dict:
    root = WORK / case["repo"].replace("/", "__")
    res = {"ok": False, "wall_s": None, "error": None, "raw": None}
    if not (root / case["path"]).is_file():
        res["error"] = f"not materialised: {root / case['path']} (run materialise.py)"
        return res
    cmd = [tool, "check", "--no-config", "--output-format", "json", "-j", "1", case["path"]]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        res["error"] = f"timeout after {TIMEOUT_S}s"
        return res
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    try:
        res["raw"] = json.loads(proc.stdout)
        res["ok"] = True
    except json.JSONDecodeError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        res["error"] = f"rc={proc.returncode}, no JSON: {' | '.join(tail)[:400]}"
    return res


# ---------------------------------------------------------------- interpreting output
def _norm_rel(filename: str, root: Path) -> str:
    """A finding's filename, made relative to the materialised repo root."""
    marker = f".work/{root.name}/"
    s = filename.replace("\\", "/")
    if marker in s:
        return s.split(marker, 1)[1]
    p = Path(s)
    for base in (root, PROJECT, Path.cwd()):
        q = p if p.is_absolute() else base / p
        try:
            return str(q.resolve().relative_to(root.resolve()))
        except ValueError:
            continue
    return s


def interpret(raw, case: dict) -> dict:
    root = WORK / case["repo"].replace("/", "__")
    out = {"shape": None, "verdicts": {}, "reasons": {}, "unit_diffusion": None, "findings": [], "units": 0}
    if isinstance(raw, list):
        out["shape"] = "legacy"
        findings = raw
        missing = {f.get("optimization") for f in findings if f.get("severity") == "missing"}
        out["verdicts"] = {k: ("missing" if k in missing else "present") for k in KEYS}
    elif isinstance(raw, dict) and "units" in raw:
        out["shape"] = f"schema{raw.get('schema_version')}"
        findings = raw.get("findings", [])
        units = raw.get("units", [])
        out["units"] = len(units)
        target = (root / case["path"]).resolve()
        unit = None
        for u in units:
            e = Path(u.get("entry", ""))
            cands = [e] if e.is_absolute() else [root / e, PROJECT / e, Path.cwd() / e]
            if (
                any(c.resolve() == target for c in cands)
                or str(e).endswith("/" + case["path"])
                or str(e) == case["path"]
            ):
                unit = u
                break
        if unit is None and len(units) == 1:
            unit = units[0]
        if unit is not None:
            out["unit_diffusion"] = unit.get("diffusion")
            for k in KEYS:
                v = unit.get("verdicts", {}).get(k)
                st = v.get("state") if isinstance(v, dict) else v
                out["verdicts"][k] = st if st in STATES else "unknown"
                out["reasons"][k] = (v.get("reason") or "") if isinstance(v, dict) else ""
        else:
            out["verdicts"] = {k: "unknown" for k in KEYS}
            out["no_unit"] = True
    else:
        raise ValueError("unrecognised JSON shape")
    for f in findings:
        loc = f.get("location") or {}
        out["findings"].append(
            {
                "code": f.get("code"),
                "key": f.get("optimization"),
                "severity": f.get("severity"),
                "file": _norm_rel(f.get("filename", ""), root),
                "row": loc.get("row"),
                "column": loc.get("column"),
                "message": (f.get("message") or "")[:200],
            }
        )
    return out


def is_internal(f: dict) -> bool:
    return str(f.get("code") or "").startswith("T2S9") or "internal error" in (f.get("message") or "")


# ---------------------------------------------------------------- bug matching
_func_cache: dict[Path, list[tuple[int, int, str]]] = {}


def functions_of(path: Path) -> list[tuple[int, int, str]]:
    if path not in _func_cache:
        spans = []
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    spans.append((node.lineno, node.end_lineno or node.lineno, node.name))
        except (OSError, SyntaxError, ValueError):
            pass
        _func_cache[path] = spans
    return _func_cache[path]


def innermost_function(path: Path, line: int | None) -> tuple[int, int, str] | None:
    if line is None:
        return None
    best = None
    for s, e, n in functions_of(path):
        if s <= line <= e and (best is None or e - s < best[1] - best[0]):
            best = (s, e, n)
    return best


def bug_matches(finding: dict, bug: dict, case: dict, root: Path) -> bool:
    if finding["key"] != bug["key"]:
        return False
    bfile = bug.get("file", case["path"])
    if Path(finding["file"]).as_posix() != Path(bfile).as_posix():
        return False
    if finding["row"] is None:
        return False
    if abs(finding["row"] - int(bug["line"])) <= 3:
        return True
    fa = innermost_function(root / bfile, finding["row"])
    fb = innermost_function(root / bfile, int(bug["line"]))
    return fa is not None and fa == fb


# ---------------------------------------------------------------- scoring
def score(cases: list[dict], results: list[dict]) -> dict:
    per_key = {k: Counter() for k in KEYS}
    confusion = {k: Counter() for k in KEYS}
    per_file = []
    bug_tp = bug_fp = 0
    bugs_total = bugs_found = 0
    dup_total = 0
    internal_total = 0
    nondiff_findings = 0
    nondiff_findings_list = []
    diffusion_flag = Counter()
    errors = []
    for case, res in zip(cases, results):
        root = WORK / case["repo"].replace("/", "__")
        row = {
            "repo": case["repo"],
            "path": case["path"],
            "diffusion": case["diffusion"],
            "wall_s": res["wall_s"],
            "error": res["error"],
        }
        if not res["ok"]:
            errors.append(row)
            per_file.append(row)
            continue
        try:
            it = interpret(res["raw"], case)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            row["error"] = f"cannot interpret output: {exc}"
            errors.append(row)
            per_file.append(row)
            continue
        row["shape"] = it["shape"]
        row["tool_diffusion"] = it["unit_diffusion"]
        if it["unit_diffusion"] is not None:
            diffusion_flag["agree" if bool(it["unit_diffusion"]) == case["diffusion"] else "disagree"] += 1
        row["keys"] = {}
        for k in KEYS:
            want, got = case["verdicts"][k], it["verdicts"].get(k, "unknown")
            c = per_key[k]
            c["n"] += 1
            confusion[k][f"{want} -> {got}"] += 1
            if got == "unknown":
                c["unknown"] += 1
                outcome = "unknown"
            else:
                c["given"] += 1
                if got == want:
                    c["correct"] += 1
                    c["lenient"] += 1
                    outcome = "ok"
                else:
                    c["wrong"] += 1
                    outcome = "WRONG"
                    # lenient: a key that does not apply, reported as passing
                    if want == "n/a" and got == "present":
                        c["lenient"] += 1
                        outcome = "n/a-as-present"
                    if got == "present" and want in ("missing", "off-by-default"):
                        c["wrong_pass"] += 1
                        outcome = "WRONG-PASS"
            row["keys"][k] = {"label": want, "tool": got, "outcome": outcome, "reason": it["reasons"].get(k, "")}
        # duplicates
        seen = Counter((f["code"], f["file"], f["row"], f["column"]) for f in it["findings"])
        dups = sum(n - 1 for n in seen.values() if n > 1)
        dup_total += dups
        row["duplicates"] = dups
        # diffusion findings on non-diffusion code
        if not case["diffusion"]:
            nd = [f for f in it["findings"] if f["key"] in DIFFUSION_KEYS]
            nondiff_findings += len(nd)
            nondiff_findings_list += [
                {"repo": case["repo"], "path": case["path"], **{k: f[k] for k in ("code", "file", "row")}} for f in nd
            ]
            row["diffusion_findings"] = len(nd)
        # internal errors of the tool are reported, not scored as bugs
        internal = [f for f in it["findings"] if is_internal(f)]
        internal_total += len(internal)
        row["internal_errors"] = [f"{f['code']}: {f['message']}" for f in internal]
        # bugs
        bug_findings = [f for f in it["findings"] if f["severity"] == "bug" and not is_internal(f)]
        matched_labels = set()
        row["bug_findings"] = []
        for f in bug_findings:
            hits = [i for i, b in enumerate(case["bugs"]) if bug_matches(f, b, case, root)]
            if hits:
                bug_tp += 1
                matched_labels.update(hits)
            else:
                bug_fp += 1
            row["bug_findings"].append({**{k: f[k] for k in ("code", "file", "row", "message")}, "tp": bool(hits)})
        bugs_total += len(case["bugs"])
        bugs_found += len(matched_labels)
        row["labelled_bugs"] = [{**b, "found": i in matched_labels} for i, b in enumerate(case["bugs"])]
        row["findings"] = len(it["findings"])
        per_file.append(row)

    def ratio(a, b):
        return round(a / b, 3) if b else None

    def stats(c: Counter) -> dict:
        return {
            "n": c["n"],
            "given": c["given"],
            "accuracy": ratio(c["correct"], c["given"]),
            "lenient_accuracy": ratio(c["lenient"], c["given"]),
            "unknown_share": ratio(c["unknown"], c["n"]),
            "confidently_wrong": c["wrong"],
            "wrong_pass": c["wrong_pass"],
        }

    keys_out = {}
    tot = Counter()
    for k in KEYS:
        c = per_key[k]
        tot.update(c)
        keys_out[k] = {**stats(c), "confusion": dict(sorted(confusion[k].items()))}
    walls = [r["wall_s"] for r in per_file if r.get("wall_s") is not None]
    return {
        "files": len(cases),
        "repos": len({c["repo"] for c in cases}),
        "scored_files": len(cases) - len(errors),
        "errors": errors,
        "per_key": keys_out,
        "overall": stats(tot),
        "bugs": {
            "bug_findings": bug_tp + bug_fp,
            "true_positives": bug_tp,
            "precision": ratio(bug_tp, bug_tp + bug_fp),
            "labelled": bugs_total,
            "found": bugs_found,
            "recall": ratio(bugs_found, bugs_total),
        },
        "duplicate_findings": dup_total,
        "internal_errors": internal_total,
        "nondiffusion": {
            "files": sum(1 for c in cases if not c["diffusion"]),
            "diffusion_findings": nondiff_findings,
            "list": nondiff_findings_list,
        },
        "diffusion_flag": dict(diffusion_flag),
        "wall_s": {
            "total": round(sum(walls), 1),
            "max": max(walls) if walls else None,
            "mean": round(sum(walls) / len(walls), 2) if walls else None,
        },
        "per_file": per_file,
    }


def fmt(v, pct=False):
    if v is None:
        return "-"
    return f"{100 * v:5.1f}%" if pct else str(v)


def print_report(s: dict) -> None:
    print(f"\n{s['files']} files from {s['repos']} repositories; {s['scored_files']} scored\n")
    hdr = f"{'key':<12} {'n':>4} {'given':>5} {'acc':>7} {'lenient':>7} {'unknown':>7} {'wrong':>5} {'wrongpass':>9}"
    print(hdr)
    print("-" * len(hdr))
    for k, c in list(s["per_key"].items()) + [("OVERALL", s["overall"])]:
        print(
            f"{k:<12} {c['n']:>4} {c['given']:>5} {fmt(c['accuracy'], True):>7} {fmt(c['lenient_accuracy'], True):>7} "
            f"{fmt(c['unknown_share'], True):>7} {c['confidently_wrong']:>5} {c['wrong_pass']:>9}"
        )
    b = s["bugs"]
    print(
        f"\nbugs: {b['bug_findings']} bug findings, {b['true_positives']} true positives, "
        f"precision {fmt(b['precision'], True)}; "
        f"{b['found']}/{b['labelled']} labelled bugs found, recall {fmt(b['recall'], True)}"
    )
    nd = s["nondiffusion"]
    print(f"non-diffusion files: {nd['files']}, diffusion-specific findings on them: {nd['diffusion_findings']}")
    if s["diffusion_flag"]:
        print(f"unit 'diffusion' flag vs label: {s['diffusion_flag']}")
    print(f"duplicate findings (same code + location): {s['duplicate_findings']}")
    print(f"internal errors reported by the tool (T2S9xx, not scored as bugs): {s['internal_errors']}")
    w = s["wall_s"]
    print(f"wall time: total {w['total']}s, mean {w['mean']}s, max {w['max']}s")
    if s["errors"]:
        print("\nerrors:")
        for e in s["errors"]:
            print(f"  {e['repo']}:{e['path']}: {e['error']}")
    print("\nbug findings:")
    for r in s["per_file"]:
        for b in r.get("bug_findings", []):
            print(f"  {'TP' if b['tp'] else 'FP'} {r['repo']}:{b['file']}:{b['row']} {b['code']} {b['message'][:110]}")
        for b in r.get("labelled_bugs", []):
            if not b["found"]:
                print(f"  FN {r['repo']}:{b.get('file', r['path'])}:{b['line']} {b['key']} {b['what'][:110]}")
        for e in r.get("internal_errors", []):
            print(f"  internal error {r['repo']}:{r['path']}: {e[:120]}")
    print("\nwrong verdicts (label -> tool):")
    for r in s["per_file"]:
        bad = {
            k: f"{v['label']}->{v['tool']}" for k, v in r.get("keys", {}).items() if v["outcome"].startswith("WRONG")
        }
        if bad:
            print(f"  {r['repo']}:{r['path']}: " + ", ".join(f"{k} {v}" for k, v in bad.items()))


def print_unknowns(s: dict) -> None:
    """Every ``unknown`` verdict with the label it should have had and the tool's reason, by key."""
    print("\nunknown verdicts (label: reason):")
    for k in KEYS:
        for r in s["per_file"]:
            v = r.get("keys", {}).get(k)
            if v and v["tool"] == "unknown":
                print(f"  {k:<12} {r['repo']}:{r['path']} [{v['label']}] {v.get('reason', '')[:150]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", help="only repositories whose name contains this (repeatable)")
    ap.add_argument("--jobs", "-j", type=int, default=1, help="files checked in parallel (processes)")
    ap.add_argument("--json", dest="json_out", type=Path, default=HERE / "results.json")
    ap.add_argument("--tool", default=default_tool(), help="the t2s-opt executable")
    ap.add_argument("--unknowns", action="store_true", help="also list every unknown verdict with the tool's reason")
    ap.add_argument(
        "--set",
        dest="folder",
        type=Path,
        default=HERE,
        help="a validation set folder with labels/ and .work/ (default: this one; validation/heldout: held-out)",
    )
    args = ap.parse_args(argv)
    global LABELS, WORK
    LABELS, WORK = args.folder / "labels", args.folder / ".work"
    sys.modules[label_files.__module__].LABELS = LABELS  # materialise.load_labels reads its own global
    if args.folder != HERE and args.json_out == HERE / "results.json":
        args.json_out = args.folder / "results.json"

    cases = load_labels(args.only)
    if not cases:
        print("no labelled files selected")
        return 1
    print(f"checking {len(cases)} files with {args.tool} ({args.jobs} at a time)", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda c: run_case(c, args.tool), cases))
    for c, r in zip(cases, results):
        print(f"  {r['wall_s'] or 0:6.1f}s  {c['repo']}:{c['path']}" + (f"  ERROR {r['error']}" if r["error"] else ""))
    s = score(cases, results)
    print_report(s)
    if args.unknowns:
        print_unknowns(s)
    args.json_out.write_text(json.dumps(s, indent=1) + "\n")
    print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
