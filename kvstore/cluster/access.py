"""Letting a database's OS user reach its data directory, granting no more than that.

As root, PostgreSQL runs as the ``postgres`` OS user (see ``postgres.py``), which must be able to
traverse every directory on the way to its data directory. kvstore changes only directories it
was handed or created (a cluster's ``--dir`` and what lies below it), and only as needed: a
directory the user cannot traverse and whose group permissions are unused (``mktemp -d`` makes
``root:root 0700``) gets the user's group with search permission only (``root:postgres 0710``).
Directories above are checked and never changed: one the user cannot traverse stops the start
with a message naming it and the fix.

The check reads mode bits, the way the kernel decides for a process with the user's uid and
primary gid and no supplementary groups (how the server is started); ACLs are not read.
"""

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from kvstore.cluster.instance import InstanceError


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int


def server_user_as_root(name: str, missing: str) -> OsUser | None:
    """Who a server-side program runs as: None (ourselves) unless we are root, then OS user ``name``;
    ``missing`` is the error's detail when there is no such user."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise InstanceError(missing) from None
    return OsUser(name, account.pw_uid, account.pw_gid)


def can_traverse(directory: Path, user: OsUser) -> bool:
    """Whether ``user`` (no supplementary groups) has search permission on ``directory``."""
    status = directory.stat()
    if user.uid == 0:
        return True
    if status.st_uid == user.uid:
        return bool(status.st_mode & stat.S_IXUSR)
    if status.st_gid == user.gid:
        return bool(status.st_mode & stat.S_IXGRP)
    return bool(status.st_mode & stat.S_IXOTH)


def grant_traverse(owned: Path, target: Path, user: OsUser) -> None:
    """Let ``user`` reach ``target``: check every directory above ``owned``, grant search
    permission on ``owned`` and the directories between it and ``target`` where it lacks it.
    ``target`` itself is the caller's to hand over (e.g. chown a data directory)."""
    owned, target = owned.resolve(), target.resolve()
    for directory in reversed(owned.parents):
        if not can_traverse(directory, user):
            raise InstanceError(
                f"{directory}: the {user.name!r} OS user cannot traverse it ({_mode(directory)}), and the server runs"
                f" as that user when kvstore runs as root. kvstore changes nothing above {owned}: grant it"
                f" (setfacl -m u:{user.name}:x {directory}, or chmod o+x {directory}) or choose a directory"
                " elsewhere (e.g. --dir /var/tmp/kvstore-cluster)"
            )
    between = [owned, *(p for p in reversed(target.parents) if p != owned and p.is_relative_to(owned))]
    for directory in between:
        if directory != target and not can_traverse(directory, user):
            _grant(directory, user)


def _grant(directory: Path, user: OsUser) -> None:
    status = directory.stat()
    if status.st_mode & stat.S_IRWXG:
        raise InstanceError(
            f"{directory}: the {user.name!r} OS user cannot traverse it ({_mode(directory)}) and its group"
            f" permissions are in use, so kvstore leaves it alone: grant it (setfacl -m u:{user.name}:x {directory})"
            " or choose another directory"
        )
    os.chown(directory, -1, user.gid)
    directory.chmod(stat.S_IMODE(status.st_mode) | stat.S_IXGRP)


def _mode(directory: Path) -> str:
    status = directory.stat()
    return f"mode {stat.S_IMODE(status.st_mode):04o}, owner uid {status.st_uid}, group gid {status.st_gid}"
