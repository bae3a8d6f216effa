"""DashScope (Qwen) backend through the official SDK's asynchronous client.

The SDK reports HTTP errors in the response object instead of raising, so every reply's status is
checked here: 429 and 5xx are retried with backoff, 401/403 stop everything (the key is wrong and
no retry can fix it), other 4xx fail that prompt only. The key comes from ``DASHSCOPE_API_KEY``
and is never put in a message. ``DASHSCOPE_HTTP_BASE_URL`` is read on every construction (the SDK
reads it only at import), so tests can point a running process at a local server.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
import dashscope

from config import Config
from data.interests.base import FatalError, InterestError, LLMExtractor, TransientError
from data.interests.prompt import Messages

KEY_ENV = "DASHSCOPE_API_KEY"
BASE_URL_ENV = "DASHSCOPE_HTTP_BASE_URL"


class DashScopeExtractor(LLMExtractor):
    backend = "dashscope"

    def __init__(self, icfg: Config) -> None:
        super().__init__(icfg, str(icfg.model))
        key = os.environ.get(KEY_ENV, "").strip()
        if not key:
            raise InterestError(
                f"interests.backend=dashscope needs the environment variable {KEY_ENV} "
                "(or choose --interests.backend=local or keywords)"
            )
        self._key = key
        self._base_url = os.environ.get(BASE_URL_ENV) or None
        self.timeout_s = float(icfg.timeout_s)
        self.parallelism = max(1, int(icfg.concurrency))
        self._slots = asyncio.Semaphore(self.parallelism)

    def _scrub(self, text: str) -> str:
        return str(text).replace(self._key, "***")

    async def _complete(self, messages: Messages, attempt: int) -> str:
        async with self._slots:
            try:
                resp = await asyncio.wait_for(
                    dashscope.AioGeneration.call(
                        model=self.model,
                        messages=messages,
                        api_key=self._key,
                        result_format="message",
                        base_address=self._base_url,
                    ),
                    self.timeout_s,
                )
            except TimeoutError as err:
                raise TransientError(f"no reply within {self.timeout_s:g}s") from err
            except (aiohttp.ClientError, OSError) as err:
                raise TransientError(f"connection error: {type(err).__name__}") from err
        status = int(resp.status_code)
        if status == 200:
            choices = resp.output.choices if resp.output else None
            message = choices[0].message if choices else None
            return str(message.content or "") if message else ""
        why = self._scrub(f"HTTP {status} {resp.code}: {resp.message}")
        if status in (401, 403):
            raise FatalError(f"DashScope rejected the API key in {KEY_ENV} ({why})")
        if status == 429 or status >= 500:
            raise TransientError(why)
        raise InterestError(why)

    async def aclose(self) -> None:
        await dashscope.close_shared_aio_session()
