"""The error raised when a configured model cannot be resolved, downloaded, loaded or described.

Its message names the model, the URI and the fix; the proxy answers it with 503.
"""

from __future__ import annotations

from rendezvous.errors import RendezvousError


class ModelLoadError(RendezvousError):
    """A configured model could not be resolved, downloaded, loaded or described."""

    status = 503
    code = "model_load"
