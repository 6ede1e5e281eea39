"""Brings the photographs of small_data.py's sets into DATA/<set>/, each from its public repository at the commit
small_data.SETS pins, and counts them.

    python benchmarks/small_data_prepare.py --data-root DATA
    python benchmarks/small_data_prepare.py --data-root DATA --sets rps-cv --git-dir rps-cv=CLONE

For each set: fetches that one commit from GitHub into DATA/.git/<set> (`git fetch --depth 1`, so none of the
repository's later history), unless --git-dir names a clone that holds the commit; then `git archive COMMIT
PATHS | tar -x -C DATA/<set>`. The photographs are never changed afterwards; small_data.py cuts them by links.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from small_data import SETS

from resnetlab.imagefiles import is_image_file


def fetch_commit(repo: str, commit: str, git_dir: Path) -> Path:
    """A bare repository at git_dir holding `commit` of github.com/<repo> (that commit only)."""
    if not git_dir.exists():
        subprocess.run(["git", "init", "--bare", "--quiet", str(git_dir)], check=True)
    has_commit = subprocess.run(["git", "--git-dir", str(git_dir), "cat-file", "-e", f"{commit}^{{commit}}"])
    if has_commit.returncode != 0:
        url = f"https://github.com/{repo}.git"
        subprocess.run(["git", "--git-dir", str(git_dir), "fetch", "--depth", "1", url, commit], check=True)
    return git_dir


def extract(git_dir: Path, commit: str, paths: tuple[str, ...], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(["git", "--git-dir", str(git_dir), "archive", commit, *paths], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise SystemExit(f"git archive {commit} {' '.join(paths)} failed in {git_dir}")


def count(folder: Path) -> dict[str, int]:
    """Photographs per class folder."""
    return {
        d.name: sum(1 for p in d.rglob("*") if p.is_file() and is_image_file(p.name))
        for d in sorted(folder.iterdir())
        if d.is_dir()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument(
        "--git-dir", action="append", default=[], metavar="SET=DIR", help="a clone of the set's repository to use"
    )
    args = parser.parse_args()
    git_dirs = dict(item.split("=", 1) for item in args.git_dir)
    for name in args.sets:
        photos = SETS[name]
        if name in git_dirs:
            git_dir = Path(git_dirs[name])
        else:
            git_dir = fetch_commit(photos.repo, photos.commit, args.data_root / ".git" / name)
        extract(git_dir, photos.commit, photos.paths, args.data_root / name)
        print(f"{name}: {photos.repo} at {photos.commit[:7]} -> {args.data_root / name}")
        for split in filter(None, (photos.train, photos.test)):
            print(f"  {split}: {count(args.data_root / name / split)}")


if __name__ == "__main__":
    main()
