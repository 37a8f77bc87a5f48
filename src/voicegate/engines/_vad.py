"""The local engine's voice activity detector: RMS energy over 20 ms windows of PCM16."""

from __future__ import annotations

import operator
import sys
from array import array
from collections.abc import Iterator
from typing import Literal

from voicegate.engines._ga import BYTES_PER_SECOND

WINDOW_BYTES = BYTES_PER_SECOND // 50  # 20 ms
WINDOW_MS = 20

VadEvent = tuple[Literal["speech_started", "speech_stopped"], int]


def mean_square(window: bytes | bytearray) -> float:
    """Mean of the squared PCM16 samples (little-endian) of `window`."""
    samples = array("h", window)
    if sys.byteorder == "big":  # PCM16 on the wire is little-endian
        samples.byteswap()
    return float(sum(map(operator.mul, samples, samples))) / len(samples)


class EnergyVad:
    """Finds where speech starts and where `silence_ms` of silence after speech ends.

    It reads a growing buffer window by window, remembering how far it got (`position`), so each
    byte is looked at once however the audio was split into frames.
    """

    def __init__(self, speech_rms: float, silence_ms: int = 500) -> None:
        self.threshold = speech_rms * speech_rms
        self.silence_ms = silence_ms
        self.reset()

    def reset(self) -> None:
        """Forget everything: the buffer was committed or cleared."""
        self.position = 0
        self.speaking = False
        self._silent_ms = 0

    def scan(self, buffer: bytes | bytearray) -> Iterator[VadEvent]:
        """Yield `(event, offset)` for each boundary in the unread part of `buffer`.

        `offset` is where in the buffer the speech starts, or where the turn ends (the end of the
        silence that closed it). A caller that removes the turn from the buffer while iterating
        must `reset`, so that scanning goes on from the new start.
        """
        while len(buffer) - self.position >= WINDOW_BYTES:
            start = self.position
            self.position += WINDOW_BYTES
            if mean_square(buffer[start : self.position]) >= self.threshold:
                self._silent_ms = 0
                if not self.speaking:
                    self.speaking = True
                    yield "speech_started", start
            elif self.speaking:
                self._silent_ms += WINDOW_MS
                if self._silent_ms >= self.silence_ms:
                    self.speaking = False
                    self._silent_ms = 0
                    yield "speech_stopped", self.position
