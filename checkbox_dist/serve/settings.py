"""`Settings`: the limits of `checkbox-dist serve` (the command's defaults), kept apart from the app so the
command line can show them without importing the web stack."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
    # URL fetches may reach public addresses only (data/download.py AddressPolicy), plus these networks /
    # addresses / host names: e.g. ["10.0.0.0/8", "images.internal"].
    url_allow: list[str] = field(default_factory=list)
    # Exposure: a bearer token required on every endpoint but /health ("" = none); /model's training config,
    # paths and versions only with model_details; /docs, /redoc, /openapi.json only with api_docs; Host
    # headers accepted (empty: any; `serve` on a loopback address sets the loopback names); seconds a request
    # body may take to arrive in full (408 after).
    token: str = ""
    model_details: bool = False
    api_docs: bool = False
    trusted_hosts: list[str] = field(default_factory=list)
    body_timeout: float = 30.0

    def public(self) -> dict:
        """The settings without secrets (what /model shows with model_details)."""
        return {k: v for k, v in asdict(self).items() if k != "token"}
    # Decode memory (data/images.py decode_cost: pixels x (stored bytes a pixel + 4)): one image may need at
    # most max_decode_mb (256 MiB: 32 Mpx RGBA, 42 Mpx 16-bit grey), all decodes in flight together at most
    # decode_memory_mb, on decode_threads threads; a decode that finds no room within 30 s is a 503.
    max_decode_mb: float = 256.0
    decode_memory_mb: float = 768.0
    decode_threads: int = 4
