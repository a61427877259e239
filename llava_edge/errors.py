"""The llava-edge error tree.

Every error the package raises on purpose is a ``LlavaEdgeError``. Each one knows the Runware error
item it becomes on the wire (``code``, ``message``, ``parameter``), and each message says what to do
next. Classes also inherit the builtin that fits, so callers may catch ``ValueError`` or
``FileNotFoundError`` without knowing this module::

    LlavaEdgeError
    ├── InvalidRequestError (ValueError)      a request field breaks the Runware schema
    │   ├── InvalidImageError                 an image cannot be read, fetched or is too large
    │   ├── ContextOverflowError              image + prompt + max_tokens exceed n_ctx
    │   ├── ConflictTaskUUIDError             a live task already uses this taskUUID
    │   ├── SchemaError                       a JSON Schema or grammar for structured output is refused
    │   └── PayloadTooLargeError              a request body is over the server's size cap
    ├── AuthenticationError                   missing or wrong API key (server)
    │   └── TooManyAttemptsError              too many failed keys from one address; wait a minute
    ├── TaskNotFoundError (KeyError)          getResponse for an unknown or expired task
    ├── ServerBusyError                       the task queue is full; retry later
    ├── ImageStoreError (OSError)             an upload cannot be stored: the disk is (nearly) full or unwritable
    ├── ServerConfigError (ValueError)        unsafe or impossible server settings
    ├── UnknownModelError (KeyError)          no variant has this id or alias
    ├── RegistryError (ValueError)            models.toml (or a user's registry) is malformed
    ├── ModelFileError (ValueError)           a GGUF file is missing, truncated or of the wrong kind
    ├── ModelNotCachedError (FileNotFoundError)  offline and the files are not in the cache
    ├── DownloadError                         the hub could not deliver a file
    │   ├── ChecksumMismatchError             a downloaded file's size or sha256 is wrong
    │   └── InsufficientDiskError             not enough free disk for a download
    ├── InsufficientMemoryError               no variant fits in the available memory
    ├── OutputFileError (ValueError)          a batch output or dataset file is corrupt, foreign or locked
    ├── PhotoMetadataError (OSError)          a caption could not be written into an image or its XMP sidecar;
    │   │                                     the file is left byte-identical
    │   ├── ReadOnlyImageError (PermissionError)   the image (or its folder) is read-only
    │   ├── UnsupportedMetadataFormatError (ValueError)  the format has no metadata slot written in place
    │   └── CorruptMetadataError (ValueError)      the image's metadata or its sidecar cannot be parsed
    ├── MissingExtraError (ImportError)       an optional extra (server, bench, ray, photos, structured) is missing
    ├── UnsupportedPlatformError (OSError)    the CLI or Captioner was started on Windows; use WSL2
    ├── BenchmarkError                        a benchmark's worker process or the llama-mtmd-cli anchor failed
    ├── EvaluationError (ValueError)          `llava-edge eval` cannot compare: no variants, no reference, a bad set
    ├── CaptionCancelledError                 a running caption was cancelled (server shutdown)
    ├── GenerationTimeoutError (TimeoutError)  a token or the whole answer took longer than its deadline
    └── RuntimeBackendError                   llama.cpp failed to load or run
        └── StructuredOutputError             a finished structured answer does not follow its schema
"""

from __future__ import annotations

from typing import Any


class LlavaEdgeError(Exception):
    """Base class: an error meant to be shown to the user, with a Runware error code."""

    code = "internalServerError"
    parameter: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        parameter: str | None = None,
        task_type: str | None = None,
        task_uuid: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if parameter is not None:
            self.parameter = parameter
        self.task_type = task_type
        self.task_uuid = task_uuid

    def __str__(self) -> str:
        return self.message

    def to_runware(self, *, task_type: str | None = None, task_uuid: str | None = None) -> dict[str, Any]:
        """The Runware error item: ``{code, message, parameter, taskType, taskUUID}``.

        ``taskType`` and ``taskUUID`` default to the ones the error was raised with; fields that are
        unknown are left out.
        """
        item: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.parameter is not None:
            item["parameter"] = self.parameter
        task_type = task_type if task_type is not None else self.task_type
        task_uuid = task_uuid if task_uuid is not None else self.task_uuid
        if task_type is not None:
            item["taskType"] = task_type
        if task_uuid is not None:
            item["taskUUID"] = task_uuid
        return item

    @property
    def error_item(self) -> dict[str, Any]:
        """The Runware error item for the task this error was raised for."""
        return self.to_runware()


class InvalidRequestError(LlavaEdgeError, ValueError):
    """Raised when a request field is missing, of the wrong type or out of range."""

    code = "invalidRequest"


class InvalidImageError(InvalidRequestError):
    """Raised when an image input cannot be decoded, fetched, or breaks a size limit."""

    code = "invalidInputsImage"
    parameter = "inputs.image"


class ContextOverflowError(InvalidRequestError):
    """Raised before any compute when image tokens + prompt + max_tokens do not fit in n_ctx."""

    code = "maxContextLengthExceeded"
    parameter = "maxTokens"


class SchemaError(InvalidRequestError):
    """Raised before any compute when a JSON Schema (or GBNF grammar) for structured output is refused: a keyword
    it does not support (named), a bound over its limit (size, nesting, ``$ref`` chain, ``enum``, counts), or a
    grammar that does not parse."""

    code = "invalidSchema"
    parameter = "schema"


class ConflictTaskUUIDError(InvalidRequestError):
    """Raised when a taskUUID is reused while the task that owns it is still live."""

    code = "conflictTaskUUID"
    parameter = "taskUUID"


class PayloadTooLargeError(InvalidRequestError):
    """Raised by the server when a request body (or WebSocket frame) is over its size cap."""

    code = "payloadTooLarge"


class AuthenticationError(LlavaEdgeError):
    """Raised by the server when the API key is missing or wrong."""

    code = "invalidApiKey"
    parameter = "apiKey"


class TooManyAttemptsError(AuthenticationError):
    """Raised by the server when one client address has sent too many wrong keys in the last minute."""

    code = "tooManyRequests"


class TaskNotFoundError(LlavaEdgeError, KeyError):
    """Raised when getResponse names a task that is unknown or whose result has expired."""

    code = "taskFailedOrNotFound"
    parameter = "taskUUID"


class ServerBusyError(LlavaEdgeError):
    """Raised when the server's task queue is full. Retry after a short wait."""

    code = "serviceUnavailable"


class ImageStoreError(LlavaEdgeError, OSError):
    """Raised by ``ImageStore.put`` when an image cannot be stored: the disk would keep less free space than
    the store's margin, or the write itself failed (disk full, read-only). Nothing partial is left behind."""

    code = "storageUnavailable"


class ServerConfigError(LlavaEdgeError, ValueError):
    """Raised before the server starts when its settings are unsafe (a public bind without an API key)."""

    code = "invalidServerConfig"


class UnknownModelError(LlavaEdgeError, KeyError):
    """Raised when a model id, alias or Runware AIR id names no known variant."""

    code = "invalidModel"
    parameter = "model"


class RegistryError(LlavaEdgeError, ValueError):
    """Raised when models.toml, or a registry file given by the user, is malformed."""

    code = "invalidModelRegistry"


class ModelFileError(LlavaEdgeError, ValueError):
    """Raised when a GGUF file is missing, truncated, or not the kind of file expected."""

    code = "modelUnavailable"
    parameter = "model"


class ModelNotCachedError(LlavaEdgeError, FileNotFoundError):
    """Raised in offline mode when a model's files are not in the local cache."""

    code = "modelUnavailable"
    parameter = "model"


class DownloadError(LlavaEdgeError):
    """Raised when the hub cannot deliver a model file."""

    code = "modelUnavailable"
    parameter = "model"


class ChecksumMismatchError(DownloadError):
    """Raised when a downloaded file's size or sha256 differs from the registry's."""


class InsufficientDiskError(DownloadError):
    """Raised before a download starts when the target disk has too little free space."""


class InsufficientMemoryError(LlavaEdgeError):
    """Raised by ``model="auto"`` when no variant fits in the memory available."""

    code = "modelUnavailable"
    parameter = "model"


class CaptionCancelledError(LlavaEdgeError):
    """Raised by a caption that was cancelled while it ran (for example by a server shutting down)."""

    code = "serviceUnavailable"


class GenerationTimeoutError(LlavaEdgeError, TimeoutError):
    """Raised when sampling one token, or the whole answer, took longer than its deadline
    (``GenerationOptions.token_deadline_s`` / ``deadline_s``). Checked between tokens: one token is one call into
    llama.cpp that cannot be interrupted, so the answer ends at the first check past the deadline."""

    code = "timeout"


class OutputFileError(LlavaEdgeError, ValueError):
    """Raised when a batch output file cannot be used: corrupt before its end, of another format, or locked."""

    code = "invalidOutputFile"
    parameter = "out"


class PhotoMetadataError(LlavaEdgeError, OSError):
    """Raised when a caption cannot be written into an image's metadata or its XMP sidecar (the disk is full,
    the file changed while it was written, exiv2 failed). The file is left byte-identical."""

    code = "metadataWriteFailed"
    parameter = "writeMetadata"


class ReadOnlyImageError(PhotoMetadataError, PermissionError):
    """Raised when an image whose metadata should be written is read-only, or its folder is."""

    code = "readOnlyImage"


class UnsupportedMetadataFormatError(PhotoMetadataError, ValueError):
    """Raised when metadata should be written into an image whose format has no slot for it in place (GIF,
    BMP, ...); the message names the formats that have one and the sidecar option."""

    code = "unsupportedMetadataFormat"


class CorruptMetadataError(PhotoMetadataError, ValueError):
    """Raised when an image's existing metadata (EXIF, IPTC or XMP), or an existing XMP sidecar, cannot be
    parsed: writing would drop what cannot be read, so nothing is written."""

    code = "invalidImageMetadata"


class MissingExtraError(LlavaEdgeError, ImportError):
    """Raised when a feature needs an optional extra that is not installed; the message names the extra."""

    code = "missingDependency"


class UnsupportedPlatformError(LlavaEdgeError, OSError):
    """Raised when the CLI or a ``Captioner`` starts on an operating system llava-edge does not support
    (Windows); the message names WSL2, where it runs."""

    code = "unsupportedPlatform"


class BenchmarkError(LlavaEdgeError):
    """Raised when a benchmark cannot run a configuration: its worker process or the llama-mtmd-cli anchor
    failed, or the anchor is missing. The message quotes the end of the failing process's output."""

    code = "benchmarkFailed"


class EvaluationError(LlavaEdgeError, ValueError):
    """Raised by ``llava-edge eval`` when it cannot compare: no variant to evaluate, a reference that is not
    present, models that share no vocabulary, a malformed eval set, or a measuring process that failed."""

    code = "evaluationFailed"


class RuntimeBackendError(LlavaEdgeError):
    """Raised when llama.cpp fails to load a model or to run a request."""

    code = "inferenceError"


class StructuredOutputError(RuntimeBackendError):
    """Raised when a structured answer ended normally yet does not validate against its schema (the grammar
    should make that impossible); the message quotes the validator."""

    code = "invalidStructuredOutput"
