#!/usr/bin/env python3
"""Materialise the labelled repositories of the validation set.

For every ``labels/<owner>__<repo>.toml`` this finds the bare git snapshot that
the ``fetch`` tool left under ``/work/.mirror/<owner>+<repo>/`` (any git dir
below it) and writes the files of the labelled ``commit`` into
``validation/check/.work/<owner>__<repo>/``.  Files over 1 MB, symlinks,
submodules and binary files (a NUL byte in the first 8 KiB) are skipped.

No fetched code is ever committed: ``.work/`` is git-ignored.

Usage: python validation/check/materialise.py [--only REPO ...] [--mirror DIR] [--force]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

HERE = Path(__file__).resolve().parent
LABELS = HERE / "labels"
WORK = HERE / ".work"
MAX_BYTES = 1_000_000


def selected(repo: str, only: list[str] | None, all_repos: list[str]) -> bool:
    """``--only`` matches a full ``owner/name`` or a ``name`` exactly; failing that, a substring."""
    if not only:
        return True
    for o in only:
        o = o.lower()
        exact = [r for r in all_repos if o in (r.lower(), r.lower().split("/", 1)[1])]
        if exact:
            if repo in exact:
                return True
        elif o in repo.lower():
            return True
    return False


def load_labels(only: list[str] | None = None) -> list[dict]:
    out = []
    all_repos = []
    for p in sorted(LABELS.glob("*.toml")):
        with p.open("rb") as fh:
            all_repos.append(tomllib.load(fh)["repo"])
    for p in sorted(LABELS.glob("*.toml")):
        with p.open("rb") as fh:
            lab = tomllib.load(fh)
        lab["_label_file"] = p
        if not selected(lab["repo"], only, all_repos):
            continue
        out.append(lab)
    return out


def slug(repo: str) -> str:
    return repo.replace("/", "__")


def find_git_dir(mirror: Path, repo: str) -> Path | None:
    """The fetch tool names snapshots ``<mirror>/<owner>+<name>/repo`` (a bare git dir)."""
    owner, name = repo.split("/", 1)
    candidates = [mirror / f"{owner}+{name}"]
    # be lenient about case
    if mirror.is_dir():
        candidates += [d for d in mirror.iterdir() if d.name.lower() == f"{owner}+{name}".lower()]
    for base in candidates:
        if not base.is_dir():
            continue
        for cand in [base / "repo", base, *sorted(base.glob("*"))]:
            if cand.is_dir() and (cand / "objects").is_dir() and (cand / "HEAD").exists():
                return cand
            if (cand / ".git").is_dir():
                return cand / ".git"
    return None


def git(gd: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", f"--git-dir={gd}", *args], capture_output=True, **kw)


def has_commit(gd: Path, commit: str) -> bool:
    return git(gd, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


def extract(gd: Path, commit: str, dest: Path) -> tuple[int, int]:
    """Write text files <= 1 MB of ``commit`` under ``dest``; return (written, skipped)."""
    ls = git(gd, "ls-tree", "-r", "-l", "-z", commit)
    if ls.returncode:
        raise RuntimeError(ls.stderr.decode(errors="replace"))
    entries = []
    skipped = 0
    for rec in ls.stdout.split(b"\0"):
        if not rec:
            continue
        meta, path = rec.split(b"\t", 1)
        mode, typ, sha, size = meta.split()
        if typ != b"blob" or mode == b"120000" or not size.isdigit() or int(size) > MAX_BYTES:
            skipped += 1
            continue
        entries.append((sha.decode(), path.decode("utf-8", errors="surrogateescape")))
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    written = 0
    proc = subprocess.Popen(
        ["git", f"--git-dir={gd}", "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout
    for sha, path in entries:
        proc.stdin.write(sha.encode() + b"\n")
        proc.stdin.flush()
        header = proc.stdout.readline().split()
        if len(header) < 3:  # "<sha> missing"
            skipped += 1
            continue
        data = proc.stdout.read(int(header[2]))
        proc.stdout.read(1)  # trailing LF
        if b"\0" in data[:8192]:
            skipped += 1
            continue
        target = dest / path
        if ".." in Path(path).parts or Path(path).is_absolute():
            skipped += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written += 1
    proc.stdin.close()
    proc.wait()
    return written, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", help="only repositories whose name contains this (repeatable)")
    ap.add_argument("--mirror", default=os.environ.get("T2S_MIRROR", "/work/.mirror"), type=Path)
    ap.add_argument("--work", default=WORK, type=Path)
    ap.add_argument("--force", action="store_true", help="re-extract even when .work/<repo>/.commit matches")
    ap.add_argument(
        "--set",
        dest="folder",
        type=Path,
        default=HERE,
        help="a validation set folder with labels/ (default: this one); --work defaults to its .work/",
    )
    args = ap.parse_args(argv)
    global LABELS
    LABELS = args.folder / "labels"
    if args.folder != HERE and args.work == WORK:
        args.work = args.folder / ".work"

    labels = load_labels(args.only)
    missing: list[str] = []
    bad_commit: list[str] = []
    for lab in labels:
        repo, commit = lab["repo"], lab["commit"]
        dest = args.work / slug(repo)
        stamp = dest / ".t2s-validation-commit"
        if not args.force and stamp.exists() and stamp.read_text().strip() == commit:
            print(f"  up to date   {repo}")
            continue
        gd = find_git_dir(args.mirror, repo)
        if gd is None:
            missing.append(repo)
            print(f"  MISSING      {repo}: no snapshot under {args.mirror}; call fetch('github:{repo}') first")
            continue
        if not has_commit(gd, commit):
            bad_commit.append(repo)
            print(f"  NO COMMIT    {repo}: snapshot {gd} lacks {commit}; fetch a snapshot that contains it")
            continue
        written, skipped = extract(gd, commit, dest)
        stamp.write_text(commit + "\n")
        # a clone has a .git: the repository root is where a user's `check .` and project-root search stop
        (dest / ".git").mkdir(exist_ok=True)
        print(f"  extracted    {repo} @ {commit[:10]}: {written} files ({skipped} skipped)")
    ok = len(labels) - len(missing) - len(bad_commit)
    print(f"{ok}/{len(labels)} repositories materialised under {args.work}")
    if missing:
        print("Missing snapshots (call the fetch tool for each):")
        for r in missing:
            print(f"  github:{r}")
    return 1 if (missing or bad_commit) else 0


if __name__ == "__main__":
    sys.exit(main())
