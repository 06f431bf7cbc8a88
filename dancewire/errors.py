"""Errors that reach the user as one clear line at the CLI boundary."""


class DancewireError(Exception):
    """A failure the user can act on. The message is one line, no traceback is shown."""


class BadInputError(DancewireError):
    """Input (video, audio, message, file) that cannot be used."""


class ModelCacheError(DancewireError):
    """A model is missing from the cache or does not match its recorded hash."""


class DeviceError(DancewireError):
    """A camera, microphone or accelerator is missing or cannot be opened."""


class RetryLater(DancewireError):
    """A link handler took a batch but cannot make it durable now (its store is down). The ingest
    sends the feedback it carries and acks nothing of that poll's group, so the edges keep the
    windows in their spools and send them again."""

    def __init__(self, message: str, feedback=()):
        super().__init__(message)
        self.feedback = list(feedback)
