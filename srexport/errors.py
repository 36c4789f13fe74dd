"""The one exception type for mistakes a user can make, and the CLI's exit codes."""


class SRExportError(Exception):
    """A user-facing failure: carries a one-line message and the exit code the CLI returns."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(" ".join(str(message).split()))  # always one line
        if exit_code is not None:
            self.exit_code = exit_code


# Exit codes documented in `srexport --help`.
EXIT_OK = 0
EXIT_USER_ERROR = 2  # bad arguments, missing or corrupt files, existing output without --force
EXIT_VERIFY_FAILED = 3  # an artifact was made but did not match PyTorch within its threshold
EXIT_MISSING_BACKEND = 4  # every step that could run did; TensorRT or a CUDA GPU is missing
EXIT_INCOMPLETE = 5  # train stopped at --time-limit or --time-budget before its planned epochs; --resume continues it


class VerificationFailed(SRExportError):
    exit_code = EXIT_VERIFY_FAILED


class MissingBackend(SRExportError):
    exit_code = EXIT_MISSING_BACKEND
