"""The error tree of the core. Edges (web, worker, CLI) translate these into user messages.

AssistantError
├── InvalidInput          the caller sent something we cannot accept (HTTP 400)
│   ├── UnsupportedFileType
│   └── FileTooLarge
├── NotFound              an id that does not exist (HTTP 404)
├── DocumentError         a stored document could not be parsed; it fails, others go on
│   ├── ParseLimitExceeded
│   └── UnsafeDocument
├── ConfigurationError    settings or model files are wrong; fail fast at start-up
└── AuditError            the audit log could not be written; the caller fails closed
"""


class AssistantError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidInput(AssistantError):
    """The request itself is wrong: an empty question, a bad file, a bad parameter."""


class UnsupportedFileType(InvalidInput):
    """The file's extension is not one we can parse."""


class FileTooLarge(InvalidInput):
    """The file is larger than the configured upload limit."""


class NotFound(AssistantError):
    """The requested object does not exist (or is not visible to the caller)."""


class DocumentError(AssistantError):
    """A document could not be parsed or holds no text. The message is shown to the admin."""


class ConfigurationError(AssistantError):
    """The settings or the model files are not usable."""


class Unavailable(AssistantError):
    """A service the product relies on (the Chroma server, say) does not answer. Temporary:
    the worker retries later; the web answers 503."""


class AuditError(AssistantError):
    """An audit record could not be written (or signed). Callers must not go on: fail closed."""


class ParseLimitExceeded(DocumentError):
    """A document went over a parsing limit: size, pages, unpacked size, time or memory."""


class UnsafeDocument(DocumentError):
    """A document looks built to attack a parser: a ZIP bomb, XML entities, a polyglot."""


class DuplicateDocument(InvalidInput):
    """The same bytes are already a current document of the collection."""
