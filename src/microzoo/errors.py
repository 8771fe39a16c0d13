"""Errors a user can cause.

Every error a user can cause is a :class:`MicrozooError`. Its message says what was wrong
and what to do about it; the command line prints it without a traceback and exits with 2.

The tree::

    MicrozooError
    ├── PackageError            a model package cannot be opened or is not valid
    │   ├── ChecksumError       a file's sha256 differs from the one in the description
    │   ├── DownloadError       a URL could not be fetched
    │   ├── ArchiveSizeError    a zip would expand past the size or compression-ratio limits (a zip bomb)
    │   └── WeightFormatError   no usable weights, or a format microzoo cannot run
    ├── ImageError              an image cannot be read, or its content is unusable
    │   └── AxesError           the image's axes cannot be mapped onto the model's
    ├── TilingError             no tile satisfies the model's size rules and the limits given
    ├── ProcessingError         a pre/postprocessing step cannot be applied
    ├── OutputError             an output cannot be written (would overwrite an input, ...)
    ├── ConfigError             a configuration file or option is invalid
    ├── DataError               a data set (folder of images, labels) is unusable
    ├── ClusterError            a Dask cluster cannot be reached, or its workers died on a task
    ├── Cancelled               the user cancelled the work (a front end's cancel button)
    └── ZooError                a model repository refused a request (``status``: the HTTP status)
        ├── ZooNotFound         no such model, version, file or job (404)
        ├── ZooAuthError        no token, an unknown or revoked token, or a role too low (401/403)
        ├── ZooConflict         a version that exists, or a step the version's state does not allow (409)
        └── UploadError         an uploaded package is refused (400, 413 too large, 422 not valid)
"""

from __future__ import annotations


class MicrozooError(Exception):
    """Base of every error a user can cause; the message names the problem and the fix."""


class PackageError(MicrozooError):
    """A model package cannot be opened or does not follow the format."""


class ChecksumError(PackageError):
    """A file's sha256 does not match the value in the model description."""


class DownloadError(PackageError):
    """A URL could not be downloaded."""


class ArchiveSizeError(PackageError):
    """A zip would expand past the total-size or compression-ratio limits (a zip bomb looks like this)."""


class WeightFormatError(PackageError):
    """The package has no weights in a format microzoo can run."""


class ImageError(MicrozooError):
    """An image cannot be read or its content cannot be used."""


class AxesError(ImageError):
    """An image's axes cannot be mapped onto a model's axes."""


class TilingError(MicrozooError):
    """No tiling satisfies the model's size rules with the limits given."""


class ProcessingError(MicrozooError):
    """A pre- or postprocessing step cannot be applied."""


class OutputError(MicrozooError):
    """An output cannot be written."""


class ConfigError(MicrozooError):
    """A configuration file or option is invalid."""


class DataError(MicrozooError):
    """A data set (images, labels, pairs) cannot be used as given."""


class ClusterError(MicrozooError):
    """A Dask scheduler cannot be reached, or the workers running a task kept dying."""


class Cancelled(MicrozooError):
    """The user cancelled the work: raised from a progress callback (``microzoo.progress.cancellable``)."""


class ZooError(MicrozooError):
    """A model repository refused a request; ``status`` is the HTTP status the server answers with."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class ZooNotFound(ZooError):
    """No such model, version, file or job."""

    status = 404


class ZooAuthError(ZooError):
    """No token (401), an unknown or revoked token (401), or a role too low for the request (403)."""

    status = 401


class ZooConflict(ZooError):
    """The version exists already, or the version's state does not allow the step asked for."""

    status = 409


class UploadError(ZooError):
    """An uploaded package is refused: unsafe (400), too large (413) or not a valid package (422)."""

    status = 422
