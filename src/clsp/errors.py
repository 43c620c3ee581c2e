"""Errors a user can cause and fix. The CLI prints their message on one line and exits with code 2."""

from __future__ import annotations

import errno


class UserError(Exception):
    """Bad input, missing data, mismatched files: say what is wrong and what to do, no traceback."""


class ConfigError(UserError):
    """A configuration key is unknown, has the wrong type, or is out of range."""


def describe_os_error(e: OSError) -> str:
    """One sentence for an error the machine raised (full disk, read-only folder, a file in the way):
    what happened, where, and what to do. Writers are atomic, so nothing half-written is left."""
    where = " and ".join(str(f) for f in (e.filename, e.filename2) if f) or "a file"
    code = e.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device (writing {where}); free some space or choose another output "
                "directory, then run the command again: it resumes where it stopped")
    if code == errno.EROFS:
        return f"{where} is on a read-only filesystem; choose an output directory you can write to"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied for {where}; choose a path you may write to, or change its permissions"
    if code == errno.ENOTDIR:
        return f"a part of {where} is a file, not a folder; choose another path"
    if code == errno.EEXIST:
        return f"{where} exists and is a file, not a folder; choose another path or move the file away"
    if code == errno.EISDIR:
        return f"{where} is a folder, not a file; give the path of a file"
    if code == errno.ENOENT:
        return f"{where} does not exist"
    return f"{e.strerror or e} ({where})"
