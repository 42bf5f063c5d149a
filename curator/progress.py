"""Progress bars that stay quiet when asked to (tests, ``--json``, non-TTY CI logs)."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Optional


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


@contextlib.contextmanager
def progress_bar(total: Optional[int], desc: str, unit: str, enabled: bool = True) -> Iterator:
    """A tqdm bar (rate and ETA included) on stderr, or a no-op object."""
    if not enabled:
        yield _Silent()
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr,
              mininterval=0.5, smoothing=0.1) as bar:
        yield bar
