"""A minimal client for any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, OpenAI).

Used by the optional LLM judge (evaluation) and DS2's remote rater. Plain urllib, so no SDK is
needed; the API key, if any, is read from an environment variable, never from the run config.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass


class EndpointError(RuntimeError):
    """The endpoint could not be reached or answered with something that is not a completion."""


@dataclass(frozen=True)
class ChatEndpoint:
    """`url` is the base URL (e.g. http://localhost:8000/v1); `model` the served model name."""

    url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int = 256, temperature: float = 0.0) -> str:
        """The first choice's message text for `messages` (role/content dicts)."""
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": max_tokens,
                           "temperature": temperature}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url.rstrip("/") + "/chat/completions", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read())
            return str(payload["choices"][0]["message"]["content"])
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
            raise EndpointError(f"{self.url}: {err}") from err
