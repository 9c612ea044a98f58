"""Atomic writers."""

from __future__ import annotations

import os

from cell2location_nf.io.write import atomic_write


def test_atomic_writes_get_the_usual_file_permissions(tmp_path):
    """Written files are readable by the group/others as umask allows, not 0600 like a bare temporary file."""
    path = atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
