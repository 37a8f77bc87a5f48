"""The stand-in OpenAI Realtime upstream (tests/standin_openai.py) in a process of its own.

    python -m bench.standin

Prints its `ws://` URL, then serves until SIGTERM. Append frames are answered at once with a
`response.output_audio.delta` carrying the same audio and `event_id`, and are not recorded.
"""

from __future__ import annotations

from tests.standin_openai import StandinOpenAI

from bench._loop import run, until_terminated


async def main() -> None:
    async with StandinOpenAI(record_appends=False) as upstream:
        print(upstream.url, flush=True)
        await until_terminated()


if __name__ == "__main__":
    run(main())
