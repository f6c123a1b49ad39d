"""Metadata helpers shared by the domains' assets."""

import base64
from pathlib import Path

import dagster as dg

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def image_markdown(path: Path, alt: str) -> dg.MetadataValue:
    """An image shown inline in the Dagster UI's metadata panel (embedded, so it needs no file server)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:{_MIME.get(path.suffix.lower(), 'image/png')};base64,{data})")
