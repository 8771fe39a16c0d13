"""Errors a user can cause.

Every error a user can cause is a :class:`MicrozooError`. Its message says what was wrong
and what to do about it; the command line prints it without a traceback and exits with 2.

The tree::

    MicrozooError
    ├── PackageError            a model package cannot be opened or is not valid
    │   ├── ChecksumError       a file's sha256 differs from the one in the description
    │   ├── DownloadError       a URL could not be fetched
    │   └── WeightFormatError   no usable weights, or a format microzoo cannot run
    ├── ImageError              an image cannot be read, or its content is unusable
    │   └── AxesError           the image's axes cannot be mapped onto the model's
    ├── TilingError             no tile satisfies the model's size rules and the limits given
    ├── ProcessingError         a pre/postprocessing step cannot be applied
    ├── OutputError             an output cannot be written (would overwrite an input, ...)
    ├── ConfigError             a configuration file or option is invalid
    └── DataError               a data set (folder of images, labels) is unusable
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
