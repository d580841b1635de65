"""Typed errors raised by the SDK.

Every error says what was expected, what came, and how to fix it. All derive from
:class:`ChromaforgeError`, so ``except sdk.errors.ChromaforgeError`` catches them all; each also
derives from the built-in exception a caller would naturally expect (``ValueError``,
``FileNotFoundError``, ``RuntimeError``...).
"""

from __future__ import annotations

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
