"""A dependency-free progress bar for long management commands (seed)."""

from __future__ import annotations

from io import TextIOBase

WIDTH = 30


class ProgressBar:
    """Redraws one line on a terminal; elsewhere (CI, pipes) prints each quarter once."""

    def __init__(self, stream: TextIOBase, label: str, total: int) -> None:
        self.stream, self.label, self.total = stream, label, max(total, 0)
        self.done = 0
        self._interactive = hasattr(stream, "isatty") and stream.isatty()
        self._last_quarter = -1

    def advance(self, step: int = 1) -> None:
        self.done = min(self.done + step, self.total)
        self._draw()

    def _draw(self) -> None:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(WIDTH * fraction)
        line = f"{self.label:<20} [{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total}"
        if self._interactive:
            end = "\n" if self.done >= self.total else ""
            self.stream.write(f"\r{line}{end}")
            self.stream.flush()
            return
        quarter = int(fraction * 4)
        if quarter != self._last_quarter:
            self._last_quarter = quarter
            self.stream.write(line + "\n")

    def __enter__(self) -> ProgressBar:
        self._draw()
        return self

    def __exit__(self, *exc) -> None:
        if self._interactive and self.done < self.total:
            self.stream.write("\n")
