"""`Settings`: the limits of `checkbox-dist serve` (the command's defaults), kept apart from the app so the
command line can show them without importing the web stack."""

from __future__ import annotations

from dataclasses import dataclass

from checkbox_dist.data.download import DEFAULT_MAX_REDIRECTS, DEFAULT_TIMEOUT_S


@dataclass
class Settings:
    """Serve limits (the CLI's defaults). Why these numbers: a real crop is 1-200 KB, so 10 MiB per image
    and 20 MiB per request leave ample room."""

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_body_mb: float = 20.0
    max_image_mb: float = 10.0
    max_batch_items: int = 64
    url_fetch: bool = True
    url_timeout: float = DEFAULT_TIMEOUT_S
    max_redirects: int = DEFAULT_MAX_REDIRECTS
