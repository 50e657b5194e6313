"""Copy a file or a folder a recipe names, leaving out what is not the recipe's to share; replace
a folder whole.

Used wherever a recipe's files are copied somewhere else (`recipe_files/` at the end of a run,
the folder `synthkd push` uploads). A folder is copied without its hidden entries (`.git`,
`.env`, editor files): a seed folder that is a git clone would otherwise carry its
`.git/config`, and with it maybe a token, to a public repository.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def copy_entry(source: Path, target: Path) -> None:
    """Copy the file or folder `source` to `target` (its parent folders made); a folder's hidden
    files and folders are left out."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        shutil.copy2(source, target)
        return
    shutil.copytree(source, target, ignore=lambda folder, names: [n for n in names if n.startswith(".")])


def replace_folder(staging: Path, final: Path) -> None:
    """Make the fully written folder `staging` (a sibling of `final`) be `final`, by renames: the old
    one is moved aside first and deleted last, so a crash leaves one whole folder, old or new
    (`recover_folder` puts an old one back)."""
    if not final.exists():
        os.rename(staging, final)
        return
    retired = final.parent / f".{final.name}.retired-{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(final, retired)
    try:
        os.rename(staging, final)
    except BaseException:
        os.rename(retired, final)
        raise
    shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """A new folder beside `final` to fill; made `final` (`replace_folder`) when the block ends
    without an error, deleted either way: a failed block leaves `final` as it was."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    try:
        yield staging
        replace_folder(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once swapped in


def recover_folder(final: Path) -> None:
    """After a `replace_folder` that was killed: the old folder back if the new one never came,
    else the old one deleted."""
    retired = sorted(final.parent.glob(f".{final.name}.retired-*"), key=lambda path: path.stat().st_mtime)
    if retired and not final.exists():
        os.rename(retired.pop(), final)
    for path in retired:
        shutil.rmtree(path, ignore_errors=True)
