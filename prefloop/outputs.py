"""What a command may write: never over what it did not create.

The rule, first written for `labeling export` (labeling.export_files) and now every command's:

- an existing file is replaced only when the command itself wrote it (an export's card names it) or the
  operator says so (`--overwrite`); an input file is never an output, not even with `--overwrite`;
- a path that names a directory (or ends in a slash) is no file name;
- a directory is written into only when it is an earlier output of the same command, and then only the
  files that output's own manifest names are replaced (labeling.export_files);
- the directory an output goes in exists, or can be made (`make_dirs`), and is writable.

Every refusal is one line (InputError) naming the flag and the path, raised before any work starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefloop.errors import InputError


def check_output_file(path: str | Path, flag: str, *, replace: bool = False, overwrite_flag: str | None = None,
                      inputs: dict[str, str | Path | None] | None = None, make_dirs: bool = True,
                      what: str | None = None) -> Path:
    """`path` as a Path once writing a file there replaces nothing it may not; else one-line InputError.

    replace: an existing file there may be replaced (the command wrote it, or `overwrite_flag` was given).
    what: the command, named in the refusal when only its own earlier output may be replaced.
    inputs: {flag: path} of the command's input files, which are never replaced.
    make_dirs: missing directories above `path` will be made (else they must exist).
    """
    text, out = str(path), Path(path)
    if text.endswith(("/", os.sep)) or out.is_dir():
        example = out / f"output{out.suffix or '.jsonl'}"
        raise InputError(f"{flag} {text}: is a directory; give a file name such as {example}")
    for input_flag, source in (inputs or {}).items():
        if source and _same_file(out, Path(source)):
            raise InputError(f"{flag} {out}: is also the input ({input_flag}); write to another file")
    if os.path.lexists(out) and not replace:
        by = f" and was not written by {what}" if what else ""
        raise InputError(f"{flag} {out}: already exists{by}; {_hint(flag, overwrite_flag)}")
    check_output_parent(out, flag, make_dirs)
    return out


def check_output_dir(path: str | Path, flag: str, *, ours: bool = False, what: str | None = None,
                     make_dirs: bool = True) -> Path:
    """`path` as a Path when a directory may be made there (or, `ours`, an earlier output of the command
    `what` refreshed in it); else one-line InputError."""
    out = Path(path)
    if os.path.lexists(out) and not out.is_dir():
        raise InputError(f"{flag} {out}: already exists and is not a directory; choose another {flag}")
    if out.exists() and not ours:
        by = f" and is not the directory of an earlier {what}" if what else ""
        raise InputError(f"{flag} {out}: already exists{by}; choose another {flag} (a command never writes "
                         "into a directory it did not make)")
    check_output_parent(out, flag, make_dirs)
    return out


def check_output_parent(out: Path, flag: str, make_dirs: bool = True) -> None:
    """The directory `out` goes in exists (or can be made) and is writable."""
    parent = out.absolute().parent
    ancestor = next(p for p in (parent, *parent.parents) if os.path.lexists(p))
    if not ancestor.is_dir():
        raise InputError(f"{flag} {out}: {ancestor} is not a directory")
    if ancestor != parent and not make_dirs:
        raise InputError(f"{flag} {out}: no such directory {out.parent}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {out}: cannot write in {ancestor} (permission denied)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _hint(flag: str, overwrite_flag: str | None) -> str:
    if overwrite_flag:
        return f"choose another {flag}, or add {overwrite_flag} to replace it"
    return f"choose another {flag} (a command never replaces what it did not write)"
