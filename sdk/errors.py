"""Typed errors raised by the SDK.

Every error says what was expected, what came, and how to fix it. All derive from
:class:`ChromaforgeError`, so ``except sdk.errors.ChromaforgeError`` catches them all; each also
derives from the built-in exception a caller would naturally expect (``ValueError``,
``FileNotFoundError``, ``RuntimeError``...).
"""

from __future__ import annotations

import reprlib
from typing import Any


class ChromaforgeError(Exception):
    """Base class of every error the SDK raises on purpose."""


class InvalidImageError(ChromaforgeError, ValueError):
    """The input is not an image the SDK can read (unreadable file, non-image bytes, wrong type)."""


class ImageTooLargeError(InvalidImageError):
    """The image's header declares more pixels than the limit (``max_pixels``); HTTP 413 in the service."""


class ImageFormatError(InvalidImageError):
    """An array or image has a shape, dtype or value range the SDK does not accept."""


class UnknownStyleError(ChromaforgeError, KeyError):
    """A style name is not in the model's manifest (the message lists the valid ones)."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ModelNotFoundError(ChromaforgeError, FileNotFoundError):
    """The model folder, its manifest or its model file is missing."""


class ModelCorruptError(ChromaforgeError, ValueError):
    """The manifest is invalid, or the model file does not match the manifest's checksum."""


class BackendUnavailableError(ChromaforgeError, RuntimeError):
    """The requested backend cannot run here (missing package, provider or device)."""


class EngineMismatchError(BackendUnavailableError):
    """A TensorRT engine was built for another GPU or TensorRT version (the message says how to rebuild)."""


class OutputExistsError(ChromaforgeError, FileExistsError):
    """Writing would overwrite an existing file or an input (the CLI never does that silently)."""


class OutputWriteError(ChromaforgeError, OSError):
    """An output cannot be written: read-only folder, full disk, a file where a folder is needed."""


class InvalidArgumentError(ChromaforgeError, ValueError):
    """An option (style weights, strength, fusion method or parameter) is out of range."""


class JobInterrupted(KeyboardInterrupt):
    """A folder job stopped by Ctrl-C; ``summary`` holds what was done."""

    def __init__(self, summary: Any) -> None:
        super().__init__("interrupted")
        self.summary = summary


def install_hint(*extras: str) -> str:
    """How to install optional extras, from PyPI and from a source checkout: the one wording every
    missing-extra message uses.

    Example:
        >>> install_hint("serve")
        'pip install "chromaforge[serve]" (from a source checkout: pip install -e ".[serve]")'
    """
    names = ",".join(extras)
    return f'pip install "chromaforge[{names}]" (from a source checkout: pip install -e ".[{names}]")'


class InvalidVideoError(ChromaforgeError, ValueError):
    """The input is not a video the SDK can read: missing, no video stream, or undecodable."""


def shorten(value: Any, limit: int = 80, quote: bool = True) -> str:
    """``repr(value)`` for an error message, at most about ``limit`` characters: a longer string
    keeps its start and end around ``...`` and says its length; containers show their first items.
    ``quote=False``: a string as it is (a path, a reason), cut the same way.

    Every user-given value an error message echoes goes through this (a 900 KB style name or path
    would otherwise come back whole, in the message, the log and the HTTP response).

    Example:
        >>> shorten("a" * 900_000, 20)
        "'aaaaaaa...aaaaaaaa' (900000 characters)"
        >>> shorten("/tmp/" + "d" * 1000 + "/x.png", 20, quote=False)
        '/tmp/ddd...ddd/x.png (1011 characters)'
    """
    limit = max(8, limit)
    if isinstance(value, str) and not quote:
        if len(value) <= limit:
            return value
        head = (limit - 3) // 2
        return f"{value[:head]}...{value[len(value) - (limit - 3 - head):]} ({len(value)} characters)"
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother, r.maxlong = 3, limit, limit, limit
    text = r.repr(value)
    if isinstance(value, str) and len(value) > limit:
        return f"{text} ({len(value)} characters)"
    return text if len(text) <= limit + 8 else text[:limit] + "..."
